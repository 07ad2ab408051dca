"""Old import path, kept for user code.

`keras_incremental.serving` now lives in `keras_incremental.saving.serving`.
"""

from keras_incremental.saving.serving import export_for_serving
from keras_incremental.saving.serving import exported_versions

__all__ = ["export_for_serving", "exported_versions"]
