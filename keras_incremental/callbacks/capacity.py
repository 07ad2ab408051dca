"""The head's spare capacity for a stage (the `capacity` option)."""

import keras

from keras_incremental.data.targets import has_sparse_loss
from keras_incremental.data.targets import label_format
from keras_incremental.models.growth import expand
from keras_incremental.models.limits import spare_capacity_problem

# The spare capacity `capacity="auto"` allocates at least, on JAX.
AUTO_CAPACITY = 16


def reserve(model, head, capacity, classes):
    """Allocates the head's spare capacity, or the doubling that `classes`
    need: before the teacher is copied, so that its head has the student's
    layout.

    Args:
        model: The model whose stage starts.
        head: Its `ExpandableDense`.
        capacity: The `capacity` option: an integer, `None` or `"auto"`.
        classes: The number of classes the stage will know.
    """
    if head.capacity is not None:
        needed = head.storage_width(classes)
        if head.built and head.kernel.shape[-1] < needed:
            expand(model, 0, layer=head, capacity=needed)
        return
    if capacity == "auto":
        if (
            keras.backend.backend() != "jax"
            or not has_sparse_loss(model)
            or spare_capacity_problem(model, head) is not None
        ):
            # Not needed (TensorFlow grows in place, PyTorch compiles
            # nothing), or the masked columns would not stay masked.
            return
        capacity = max(AUTO_CAPACITY, 2 * classes)
    if capacity is None:
        return
    expand(model, 0, layer=head, capacity=max(capacity, classes))


def check_capacity_fits(model, head, capacity):
    """Raises unless a head with spare capacity trains exactly in `model`
    (see `ExpandableDense`)."""
    if label_format(model) != "sparse":
        problem = (
            f"the loss {model.loss!r} takes one-hot targets, which would need "
            "the capacity's width; expected a sparse loss "
            "(`SparseCategoricalCrossentropy`)"
        )
    else:
        problem = spare_capacity_problem(model, head)
    if problem is not None:
        raise ValueError(
            "A head with spare capacity gives all its columns in the train "
            "step, the inactive ones masked; in this model they would not "
            f"train exactly: {problem}. Received: capacity={capacity!r}. "
            "Pass `capacity=None` (or fix the layout)."
        )
