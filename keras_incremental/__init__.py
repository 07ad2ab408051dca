"""keras_incremental: class-incremental learning for Keras 3.

Grow a trained classifier's head in place when new classes arrive, inside the
ordinary `compile` / `fit` / `save` workflow.
"""

__version__ = "0.1.0"

from keras_incremental import layers
from keras_incremental import metrics
from keras_incremental import multiplier_optimizer  # noqa: F401 (old path)
from keras_incremental import patterns  # noqa: F401 (old path)
from keras_incremental import serving  # noqa: F401 (old path)
from keras_incremental import strategies
from keras_incremental import transfer  # noqa: F401 (old path)
from keras_incremental.callbacks import IncrementalModel
from keras_incremental.layers import ExpandableDense
from keras_incremental.models.growth import expand
from keras_incremental.models.transfer import transfer_weights
from keras_incremental.saving.serving import export_for_serving

__all__ = [
    "ExpandableDense",
    "IncrementalModel",
    "expand",
    "layers",
    "export_for_serving",
    "metrics",
    "strategies",
    "transfer_weights",
    "__version__",
]
