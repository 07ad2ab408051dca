"""Masked columns of a head with spare capacity."""

import keras
from keras import ops


def mask_columns(values, mask):
    """`values` with the columns where `mask` is false set to a logit low
    enough that its softmax is exactly 0 next to any real logit, and finite
    so that arithmetic on it stays finite (no gradient flows through it).

    Args:
        values: A tensor whose last axis is the columns.
        mask: A boolean tensor of shape `(columns,)`.

    Returns:
        A tensor like `values`: -1e9 in the masked columns (-3e4 in
        float16).
    """
    dtype = keras.backend.standardize_dtype(values.dtype)
    low = -3e4 if dtype == "float16" else -1e9
    return ops.where(mask, values, ops.cast(low, dtype))
