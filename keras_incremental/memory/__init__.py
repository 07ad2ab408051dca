"""Exemplar memory: a fixed budget of stored samples of the classes seen."""

from keras_incremental.memory.exemplar_memory import ExemplarMemory

__all__ = ["ExemplarMemory"]
