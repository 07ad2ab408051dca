"""Callbacks of keras_incremental."""

from keras_incremental.callbacks.incremental_model import IncrementalModel

__all__ = ["IncrementalModel"]
