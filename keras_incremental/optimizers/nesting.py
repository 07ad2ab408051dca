"""The optimizers that an optimizer wraps."""

import keras


def optimizer_children(optimizer):
    """The optimizers that `optimizer` wraps (loss scaling, multi).

    Args:
        optimizer: A Keras optimizer.

    Returns:
        A list: the inner optimizer of a `LossScaleOptimizer`, the
        sub-optimizers of a `MultiOptimizer`, else empty.
    """
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return [inner]
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return list(optimizer.optimizers)
    return []
