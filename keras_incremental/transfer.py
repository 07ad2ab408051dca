"""Old import path, kept for user code.

`keras_incremental.transfer` now lives in `keras_incremental.models.transfer`.
"""

from keras_incremental.models.transfer import TransferReport
from keras_incremental.models.transfer import transfer_weights

__all__ = ["TransferReport", "transfer_weights"]
