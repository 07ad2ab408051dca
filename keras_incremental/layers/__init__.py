"""Layers of keras_incremental."""

from keras_incremental.layers.expandable_dense import ExpandableDense
from keras_incremental.layers.random_features import RandomFeatures

__all__ = ["ExpandableDense", "RandomFeatures"]
