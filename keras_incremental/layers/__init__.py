"""Layers of keras_incremental."""

from keras_incremental.layers.expandable_dense import ExpandableDense

__all__ = ["ExpandableDense"]
