"""Old import path, kept for user code.

`keras_incremental.patterns` now lives in `keras_incremental.utils.patterns`.
"""

from keras_incremental.utils.patterns import compile_pattern

__all__ = ["compile_pattern"]
