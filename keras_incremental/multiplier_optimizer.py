"""Old import path, kept for user code.

`keras_incremental.multiplier_optimizer` now lives in
`keras_incremental.optimizers.multiplier_optimizer`.
"""

from keras_incremental.optimizers.multiplier_optimizer import (
    MultiplierOptimizer,
)

__all__ = ["MultiplierOptimizer"]
