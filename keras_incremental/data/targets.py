"""Labels in the form the compiled loss expects: indices or one-hot."""

import numpy as np

SPARSE = "sparse"
CATEGORICAL = "categorical"

_CATEGORICAL_LOSSES = (
    "categoricalcrossentropy",
    "categoricalfocalcrossentropy",
    "categoricalhinge",
    "kldivergence",
    "kld",
    "kullbackleiblerdivergence",
)


def _loss_name(loss):
    if isinstance(loss, str):
        name = loss
    else:
        name = getattr(loss, "name", None) or type(loss).__name__
        if callable(loss) and hasattr(loss, "__name__"):
            name = loss.__name__
    return name.replace("_", "").lower()


def label_format(model):
    """`"categorical"` when the model's compiled loss takes one-hot labels.

    Sparse losses, unknown losses, and models not compiled get `"sparse"`:
    class indices.
    """
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return SPARSE
    name = _loss_name(loss)
    if name.startswith("sparse"):
        return SPARSE
    if name in _CATEGORICAL_LOSSES:
        return CATEGORICAL
    return SPARSE


def has_sparse_loss(model):
    """Whether the model's compiled loss is a sparse one by name (class
    indices against all output columns), not merely not a known one-hot
    one."""
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return False
    return _loss_name(loss).startswith("sparse")


def encode_targets(indices, fmt, width):
    """Class indices as `fmt` labels: int64 indices or float32 one-hot."""
    indices = np.asarray(indices, dtype="int64")
    if fmt == CATEGORICAL:
        return np.eye(width, dtype="float32")[indices]
    return indices
