"""Growing a compiled model's head in place, with everything that follows it."""

import re

import keras
import numpy as np
from keras import ops

from keras_incremental import compat
from keras_incremental.checks import check_unit_count
from keras_incremental.layers import ExpandableDense

# Slot lists that follow the variable's value rather than start at zero: the
# exponential moving average of `use_ema=True`.
_VALUE_SLOTS = ("_model_variables_moving_average",)


def iter_layers(model):
    """Every layer inside `model`, depth first, nested models included."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def layers_matching(model, pattern, purpose):
    """The layers with weights whose name fully matches regex `pattern`.

    Args:
        model: A Keras model.
        pattern: A layer name or regular expression.
        purpose: What the pattern is for, for error messages
            (e.g. `"Freeze pattern"`).

    Raises:
        ValueError: for an invalid expression, or one that matches no layer.
    """
    layers = [layer for layer in iter_layers(model) if layer.weights]
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"{purpose} {pattern!r} is not a valid regular expression "
            f"({error}); expected a layer name or pattern."
        ) from error
    matches = [layer for layer in layers if compiled.fullmatch(layer.name)]
    if not matches:
        raise ValueError(
            f"{purpose} {pattern!r} matches no layer with weights; expected "
            f"one of {[layer.name for layer in layers]} (or a regular "
            "expression matching some)."
        )
    return matches


def find_head(model, layer=None):
    """The `ExpandableDense` of `model` named or given by `layer`.

    Args:
        model: A Keras model.
        layer: A layer name, a layer of `model`, or `None` for the last
            `ExpandableDense` of the model.

    Returns:
        The `ExpandableDense` layer.

    Raises:
        TypeError: when `model` is not a Keras model, or `layer` is neither a
            name nor a layer, or names a layer that is not an
            `ExpandableDense`.
        ValueError: when no such layer is in the model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    layers = list(iter_layers(model))
    if layer is None:
        heads = [item for item in layers if isinstance(item, ExpandableDense)]
        if not heads:
            names = [item.name for item in layers]
            raise ValueError(
                f"Model '{model.name}' has no `ExpandableDense` layer to grow; "
                "expected one as its classifier head. Replace the last "
                "`keras.layers.Dense` with `keras_incremental.ExpandableDense`."
                f" Received a model with layers: {names}"
            )
        return heads[-1]
    if isinstance(layer, str):
        matches = [item for item in layers if item.name == layer]
        if not matches:
            names = [item.name for item in layers]
            raise ValueError(
                f"No layer named '{layer}' in model '{model.name}'; expected "
                f"one of {names}. Received: layer='{layer}'"
            )
        found = matches[0]
    elif isinstance(layer, keras.layers.Layer):
        if not any(item is layer for item in layers):
            raise ValueError(
                f"Layer '{layer.name}' is not part of model '{model.name}'; "
                "expected a layer of the model. Received: "
                f"layer={layer!r}"
            )
        found = layer
    else:
        raise TypeError(
            "Expected `layer` to be a layer name, a layer or `None`. "
            f"Received: layer={layer!r} of type {type(layer).__name__}"
        )
    if not isinstance(found, ExpandableDense):
        raise TypeError(
            f"Layer '{found.name}' is a `{type(found).__name__}`; expected a "
            "`keras_incremental.ExpandableDense`, the only layer that can "
            "grow in place."
        )
    return found


def expand(
    model, n, layer=None, kernel_initializer=None, bias_initializer=None
):
    """Grows a model's classifier head by `n` units, in place.

    Grows the `ExpandableDense` head and everything that depends on its
    shape: the compiled optimizer's state (per-variable slots, such as Adam's
    moments, keep their values for the old units and start at zero for the new
    ones; an EMA average starts at the variable's value; step counters
    continue) and the model's cached train, test and predict functions (made
    anew on their next call). Right after it, `fit`, `evaluate`, `predict` and
    `save` work without `compile`, also from inside a callback during `fit`
    and under a `tf.distribute` strategy.

    Only the head's variables and their slots are touched, so the cost does
    not depend on the size of the rest of the model. On TensorFlow they grow
    in place: the same variable objects, backed by TensorFlow variables whose
    last dimension is free.

    A compiled metric whose state is sized by the number of classes is resized
    when it sizes itself on first use (`F1Score`, `FBetaScore`); any other
    such metric stops the growth with an error, before anything changed.

    Args:
        model: A Keras model with an `ExpandableDense` layer.
        n: Non-negative integer, the number of output units to add.
        layer: The layer to grow: a name, a layer, or `None` for the last
            `ExpandableDense` of the model. Defaults to `None`.
        kernel_initializer: Optional initializer for the new kernel columns.
            Defaults to the layer's own `kernel_initializer`.
        bias_initializer: Optional initializer for the new bias entries.
            Defaults to the layer's own `bias_initializer`.

    Returns:
        The grown `ExpandableDense` layer.

    Raises:
        TypeError: for an `n` that is not an integer, or a `layer` that is not
            an `ExpandableDense`.
        ValueError: for a negative `n`, an unknown layer, a quantized or
            LoRA-enabled head, an optimizer whose slots cannot follow the new
            shape, or a metric with per-class state. The model is unchanged.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras_incremental.ExpandableDense(3, name="head"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y_with_3_classes, epochs=1)
    keras_incremental.expand(model, 2)      # the head now has 5 units
    model.fit(x, y_with_5_classes, epochs=1)  # no compile needed
    ```
    """
    n = check_unit_count(n, "n", 0)
    head = find_head(model, layer)
    head.check_expandable()
    optimizer_plan = _plan_optimizer(model, head)
    resized_metrics = _plan_metrics(model, head)
    if n == 0:
        return head

    # Functions traced with the head's width stated, or before it had units
    # (their call skipped the product), must be remade after any growth.
    remake = head.units == 0 or not head._free_width
    traced = None if remake else traced_variables(model)
    pairs = head.expand(
        n,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
    )
    for optimizer, slots_by_variable in optimizer_plan:
        for old, new in pairs:
            _move_slots(optimizer, old, new, slots_by_variable.get(id(old), []))
            if new is not old:
                compat.replace_trainable_variable(optimizer, old, new)
    _resize_metrics(resized_metrics, head)
    # On TensorFlow the head and its slots grew in place. Functions traced
    # with the head's width free (`IncrementalModel`'s stages) then stay
    # valid, and a retrace costs far more than the growth; they are remade
    # all the same when a variable they hold was replaced (other backends,
    # a resized metric).
    if remake or traced_variables(model) != traced:
        compat.remake_compiled_functions(model)
    return head


def traced_variables(model):
    """What a traced train step holds on to: identities of the backend
    variables of the model, its metrics and its optimizer."""
    variables = list(model.weights) + list(model.metrics_variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    return compat.backend_variable_ids(variables)


def _optimizer_tree(optimizer):
    yield optimizer
    for child in compat.optimizer_children(optimizer):
        yield from _optimizer_tree(child)


def _plan_optimizer(model, head):
    """Finds, and checks, the optimizer slots that must follow the head.

    Returns a list of `(optimizer, {id(variable): [(slot, suffix), ...]})`
    for every built optimizer in the model's optimizer tree that updates the
    head's variables.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not head.built:
        return []
    head_variables = list(head.weights)
    plan = []
    for candidate in _optimizer_tree(optimizer):
        if not candidate.built:
            continue
        known = [
            v for v in head_variables if compat.optimizer_knows(candidate, v)
        ]
        if not known:
            continue
        slot_lists = compat.optimizer_slot_lists(candidate)
        slots = {
            id(variable): _slots_of(candidate, slot_lists, variable)
            for variable in known
        }
        plan.append((candidate, slots))
    return plan


def _slots_of(optimizer, slot_lists, variable):
    """The slots `optimizer` keeps for `variable`, with the kind of each."""
    index = compat.optimizer_variable_index(optimizer, variable)
    slots = []
    for kind, slot_list in slot_lists:
        slot = slot_list[index]
        if slot is None:
            continue
        if tuple(slot.shape) != tuple(variable.shape):
            raise ValueError(
                f"Optimizer '{optimizer.name}' keeps a slot '{slot.name}' of "
                f"shape {tuple(slot.shape)} for variable '{variable.path}' of "
                f"shape {tuple(variable.shape)}; expected slots of the "
                "variable's shape, which can grow with it (as in Adam, SGD, "
                "RMSprop, AdamW, Lion, Nadam). Use such an optimizer, or "
                "recompile with a new optimizer after growing the model."
            )
        slots.append((slot, kind))
    return slots


def _move_slots(optimizer, old, new, slots):
    """Grows each slot of `old` to `new`'s shape, values carried.

    A slot grows in place where the variable did (`new is old`), and is
    replaced by a new variable otherwise.
    """
    shape = tuple(new.shape)
    for slot, kind in slots:
        old_value = compat.variable_numpy(slot)
        old_width = old_value.shape[-1]
        value = np.empty(shape, dtype=old_value.dtype)
        value[..., :old_width] = old_value
        # An average of the variable (EMA) starts from the variable's value;
        # every other slot (moments, velocities) starts at zero.
        value[..., old_width:] = (
            compat.variable_numpy(new)[..., old_width:]
            if kind in _VALUE_SLOTS
            else 0
        )
        if new is old and compat.grow_variable(slot, value):
            continue
        new_slot = compat.new_optimizer_variable(optimizer, new, slot, value)
        compat.replace_optimizer_variable(optimizer, slot, new_slot)


def _plan_metrics(model, head):
    """The compiled metrics to resize; raises for those that cannot be."""
    width = head.units
    resized = []
    for metric in compat.compiled_metrics(model):
        if compat.is_lazily_built_metric(metric):
            if metric.variables:
                resized.append(metric)
            continue
        if width < 2:
            continue
        for variable in metric.variables:
            if width in tuple(variable.shape):
                raise ValueError(
                    f"Compiled metric '{metric.name}' keeps per-class state "
                    f"(variable '{variable.name}' of shape "
                    f"{tuple(variable.shape)}) sized for the head's {width} "
                    "units; it would be wrong after growth. Expected metrics "
                    "that do not depend on the number of classes, or ones "
                    "that size themselves on first use (`F1Score`). Recompile "
                    "the model without it (keeping `optimizer=model.optimizer`"
                    " preserves the optimizer state), then grow."
                )
    return resized


def resize_lazy_metrics(model, head):
    """Sizes the compiled metrics that size themselves on first use
    (`F1Score`) for the head's current width, where they are not yet."""
    if not head.units:
        return
    stale = [
        metric
        for metric in compat.compiled_metrics(model)
        if compat.is_lazily_built_metric(metric)
        and (
            not metric.variables
            or any(
                v.shape and v.shape[-1] != head.units for v in metric.variables
            )
        )
    ]
    _resize_metrics(stale, head)


def _resize_metrics(metrics, head):
    if not metrics:
        return
    sample = ops.zeros((1, head.units), dtype="float32")
    with compat.variable_scope_of(head.weights[0]):
        for metric in metrics:
            compat.reset_lazily_built_metric(metric)
            # Sizes the metric's state now, outside any traced function.
            metric.update_state(sample, sample)
            metric.reset_state()
