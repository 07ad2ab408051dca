"""An optimizer's per-variable state (its slots), and the optimizers it
wraps: walking them, and copying the slots from one optimizer to another."""

from keras import ops

from keras_incremental import compat
from keras_incremental.optimizers.nesting import optimizer_children


def optimizer_tree(optimizer):
    """Yields `optimizer`, then the optimizers it wraps, depth first.

    A `LossScaleOptimizer` wraps its inner optimizer, a
    `keras.optimizers.MultiOptimizer` (and so a `MultiplierOptimizer`) its
    sub-optimizers; a plain optimizer wraps none.

    Args:
        optimizer: A Keras optimizer.

    Yields:
        The optimizers, each before the ones it wraps.
    """
    yield optimizer
    for child in optimizer_children(optimizer):
        yield from optimizer_tree(child)


def leaf_optimizers(optimizer):
    """The optimizers that hold slots: `optimizer`, or those it wraps.

    Args:
        optimizer: A Keras optimizer.

    Returns:
        A list of the optimizers of `optimizer_tree(optimizer)` that wrap
        none, in the same order.
    """
    return [
        item
        for item in optimizer_tree(optimizer)
        if not optimizer_children(item)
    ]


def copy_slots(source, target, pairs):
    """Copies the slots of `source`'s variables into `target`'s slots.

    For each pair `(source_variable, target_variable)` that `source` and
    `target` both update, every per-variable slot of `target` (Adam's first
    and second moments, an SGD momentum, an EMA average, ...) gets the value
    of `source`'s slot of the same kind for `source_variable`, where `source`
    has one of the same shape; the other slots keep their values. Slots are
    matched by kind (the optimizer attribute that lists them, see
    `compat.optimizer_slot_lists`) and by the variable they belong to, never
    by name or path, which differ between an optimizer built by `fit` and
    one built by `load_model`. The optimizers' own variables (`iteration`,
    `learning_rate`) are not copied.

    Each slot receives a copy of the value: the two optimizers share no
    buffer afterwards (on JAX, a train step donates the buffers of the
    state it updates, which would delete the other optimizer's).

    Args:
        source: A built optimizer that holds slots (one without wrapped
            optimizers, see `leaf_optimizers`).
        target: A built optimizer of the same kind as `source`.
        pairs: Iterable of `(source_variable, target_variable)` pairs: a
            model variable and itself (a rebuilt optimizer), or a variable
            and its counterpart in a copy of the model.

    Returns:
        `None`.

    Example:

    ```python
    new = type(old).from_config(old.get_config())
    new.build(model.trainable_variables)
    copy_slots(old, new, [(v, v) for v in model.trainable_variables])
    ```
    """
    source_lists = dict(compat.optimizer_slot_lists(source))
    target_lists = compat.optimizer_slot_lists(target)
    for source_variable, target_variable in pairs:
        if not (
            compat.optimizer_knows(source, source_variable)
            and compat.optimizer_knows(target, target_variable)
        ):
            continue
        source_index = compat.optimizer_variable_index(source, source_variable)
        target_index = compat.optimizer_variable_index(target, target_variable)
        for kind, slots in target_lists:
            slot = slots[target_index]
            if slot is None or kind not in source_lists:
                continue
            value = source_lists[kind][source_index]
            if value is not None and tuple(value.shape) == tuple(slot.shape):
                slot.assign(ops.copy(value))
