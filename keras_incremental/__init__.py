"""keras_incremental: class-incremental learning for Keras 3.

Grow a trained classifier's head in place when new classes arrive, inside the
ordinary `compile` / `fit` / `save` workflow.
"""

__version__ = "0.1.0"

from keras_incremental.growth import expand
from keras_incremental.layers import ExpandableDense

__all__ = ["ExpandableDense", "expand", "__version__"]
