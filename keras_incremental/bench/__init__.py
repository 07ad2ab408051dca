"""The class-incremental benchmark: `python -m keras_incremental.bench`."""

from keras_incremental.bench.protocol import run

__all__ = ["run"]
