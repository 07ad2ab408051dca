"""The class-incremental benchmarks: `python -m keras_incremental.bench`.

`protocol` runs five stages of two classes; `adoption` grows a saved plain
Keras classifier by two classes.
"""

from keras_incremental.bench.protocol import run

__all__ = ["run"]
