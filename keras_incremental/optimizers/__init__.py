"""Optimizers and their state: per-layer learning rates (`MultiplierOptimizer`),
rebuilding an optimizer with its slots carried over (`slots`), and per-backend
gradients."""

from keras_incremental.optimizers.multiplier_optimizer import (
    MultiplierOptimizer,
)

__all__ = ["MultiplierOptimizer"]
