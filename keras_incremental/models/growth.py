"""Growing a compiled model's head in place, with everything that follows it."""

import warnings

import keras
import numpy as np
from keras import initializers
from keras import ops

from keras_incremental import compat
from keras_incremental.layers.new_units import new_units_value
from keras_incremental.models.heads import find_head
from keras_incremental.models.heads import iter_layers
from keras_incremental.optimizers.slots import optimizer_tree
from keras_incremental.utils.checks import check_unit_count
from keras_incremental.utils.patterns import MAX_NAME_LENGTH
from keras_incremental.utils.patterns import compile_pattern

# Slot lists that hold the variable's value once the optimizer has taken a
# step, whatever they start with in `build`: the exponential moving average
# of `use_ema=True` (its first step copies the variable). Every other slot of
# a new unit starts as a freshly built optimizer starts it.
_VALUE_SLOTS = ("_model_variables_moving_average",)


def layers_matching(model, pattern, purpose):
    """The layers with weights whose name fully matches regex `pattern`.

    Args:
        model: A Keras model.
        pattern: A layer name or regular expression.
        purpose: What the pattern is for, for error messages
            (e.g. `"Freeze pattern"`).

    Raises:
        ValueError: for an invalid or unsafe expression
            (`patterns.compile_pattern`), or one that matches no layer.
    """
    layers = [layer for layer in iter_layers(model) if layer.weights]
    compiled = compile_pattern(pattern, purpose)
    # A name longer than the patterns are made safe for is matched only
    # literally: its length is the other factor of the matching time.
    matches = [
        layer
        for layer in layers
        if (
            compiled.fullmatch(layer.name)
            if len(layer.name) <= MAX_NAME_LENGTH
            else layer.name == pattern
        )
    ]
    if not matches:
        raise ValueError(
            f"{purpose} {pattern!r} matches no layer with weights; expected "
            f"one of {[layer.name for layer in layers]} (or a regular "
            "expression matching some)."
        )
    return matches


def expand(
    model,
    n,
    layer=None,
    kernel_initializer=None,
    bias_initializer=None,
    capacity=None,
):
    """Grows a model's classifier head by `n` units, in place.

    Grows the `ExpandableDense` head and everything that depends on its
    shape: the compiled optimizer's state (per-variable slots, such as Adam's
    moments, keep their values for the old units; for the new ones they
    start as a freshly built optimizer of the same config starts them, zero
    for most, the variable's value for `ScheduleFreeAdamW`'s `momentum`; an
    EMA average starts at the variable's value; step counters continue) and
    the model's cached train, test and predict functions (made anew on their
    next call). Right after it, `fit`, `evaluate`, `predict` and `save` work
    without `compile`, also from inside a callback during `fit` and under a
    `tf.distribute` strategy.

    The growth is all or nothing: every new value is computed and checked
    before anything changes, and if a change still fails half way, the head
    and the optimizer slots already grown are put back as they were before
    the error is raised again.

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
        capacity: Optional positive integer: spare capacity to allocate
            now (`ExpandableDense.reserve`), also with `n=0`. Growing within
            it later changes no variable's shape. Defaults to `None`.

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
    if capacity is not None:
        capacity = check_unit_count(capacity, "capacity", 1)
        if not head.built:
            head.reserve(capacity)
        elif capacity > (head.capacity or 0):
            reserved = head.allocate(capacity)
            try:
                return _expand(
                    model, head, n, kernel_initializer, bias_initializer
                )
            except BaseException:
                head.release_allocation(reserved)
                raise
    return _expand(model, head, n, kernel_initializer, bias_initializer)


def _expand(model, head, n, kernel_initializer, bias_initializer):
    """`expand` once the head and its capacity are known."""
    optimizer_plan = _plan_optimizer(model, head)
    resized_metrics = _plan_metrics(model, head)
    if n == 0 and (
        not head.built or head.kernel.shape[-1] == head.storage_width()
    ):
        return head

    # Functions traced with the head's width stated, or before it had units
    # (their call skipped the product), must be remade after any growth.
    remake = head.units == 0 or not head.free_width
    traced = None if remake else traced_variables(model)
    if head.built:
        growth = _plan_growth(
            head, n, kernel_initializer, bias_initializer, optimizer_plan
        )
        _grow(head, n, growth)
    else:  # Only `units` changes.
        head.expand(
            n,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
        )
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
    for candidate in optimizer_tree(optimizer):
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


class _GivenValue:
    """An initializer that gives a value computed beforehand."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(
                f"Expected a request for shape {self.value.shape}, the value "
                f"computed for the grown variable. Received: shape={shape}"
            )
        return self.value


class _SlotMove:
    """One optimizer slot of a head variable, and its grown value."""

    def __init__(self, optimizer, slot, value, replacement):
        self.optimizer = optimizer
        self.slot = slot
        self.value = value
        # A new variable to take the slot's place where the head's
        # variables are replaced rather than grown in place.
        self.replacement = replacement


class _Growth:
    """Everything a growth writes, computed before anything changes."""

    def __init__(self, weights, values, moves, optimizers):
        self.weights = weights  # The head's kernel (and bias).
        self.values = values  # Their grown values, by `id`.
        self.moves = moves  # `{id(variable): [_SlotMove, ...]}`.
        # The optimizers that update the head, each with the `id`s of the
        # head variables it updates.
        self.optimizers = optimizers


def _plan_growth(head, n, kernel_initializer, bias_initializer, plan):
    """Computes and checks the grown head and slots; changes nothing."""
    units = head.units
    weights = [
        (head.kernel, kernel_initializer or head.kernel_initializer),
        (head.bias, bias_initializer or head.bias_initializer),
    ]
    weights = [(v, initializer) for v, initializer in weights if v is not None]
    values = {}
    for variable, initializer in weights:
        old = compat.variable_numpy(variable)
        shape = old.shape[:-1] + (units + n,)
        value = np.empty(shape, dtype=old.dtype)
        value[..., :units] = old[..., :units]
        value[..., units:] = new_units_value(
            initializers.get(initializer), shape, units, variable.dtype
        )
        values[id(variable)] = value
    variables = [variable for variable, _ in weights]
    # The allocation's width: wider than the units with spare capacity.
    width = head.storage_width(units + n)
    # Grown in place (TensorFlow), assigned within the spare capacity, or
    # replaced by new variables.
    in_place = all(compat.growable(v) for v in variables) or all(
        v.shape[-1] == width for v in variables
    )
    moves = {id(v): [] for v in variables}
    for optimizer, slots_by_variable in plan:
        known = [v for v in variables if slots_by_variable.get(id(v))]
        starts = _new_unit_slot_values(
            optimizer, known, slots_by_variable, values, units
        )
        for variable in known:
            for slot, kind in slots_by_variable[id(variable)]:
                old = compat.variable_numpy(slot)
                shape = values[id(variable)].shape[:-1] + (width,)
                # Past the units, a spare column's slots stay as a spare
                # column's are: zero.
                value = np.zeros(shape, dtype=old.dtype)
                value[..., :units] = old[..., :units]
                value[..., units : units + n] = starts[kind, id(variable)]
                replacement = None
                if not in_place:
                    # Made now, in the place the new variable will have.
                    replacement = compat.new_optimizer_variable(
                        optimizer, variable, slot, value
                    )
                moves[id(variable)].append(
                    _SlotMove(optimizer, slot, value, replacement)
                )
    optimizers = [(optimizer, set(slots)) for optimizer, slots in plan]
    return _Growth(variables, values, moves, optimizers)


def _new_unit_slot_values(
    optimizer, variables, slots_by_variable, values, units
):
    """The values the slots of `variables` start with for the new units.

    Returns:
        `{(kind, id(variable)): array}`, each array shaped like the new
        units of the variable.
    """
    kinds = sorted(
        {kind for v in variables for _, kind in slots_by_variable[id(v)]}
    )
    new_units = [values[id(v)][..., units:] for v in variables]
    fresh = {}
    if any(kind not in _VALUE_SLOTS for kind in kinds):
        fresh = compat.fresh_slot_values(optimizer, variables, new_units, kinds)
        if fresh is None:
            warnings.warn(
                f"Optimizer '{optimizer.name}' of type "
                f"{type(optimizer).__name__} could not be made again from its "
                "config to find how its slots start; the slots of the new "
                "units start at zero. Expected `type(optimizer).from_config("
                "optimizer.get_config())` to work, as it does for the Keras "
                "optimizers.",
                stacklevel=4,
            )
            fresh = {}
    starts = {}
    for index, variable in enumerate(variables):
        for kind in kinds:
            if kind in _VALUE_SLOTS:
                start = new_units[index]
            elif fresh.get(kind) and fresh[kind][index] is not None:
                start = fresh[kind][index]
            else:
                start = np.zeros_like(new_units[index])
            if start.shape != new_units[index].shape:
                raise ValueError(
                    f"A fresh optimizer of type {type(optimizer).__name__} "
                    f"starts its '{kind}' slot of variable '{variable.path}' "
                    f"with shape {start.shape} for {new_units[index].shape} "
                    "new units; expected slots of the variable's shape, "
                    "which can grow with it. Recompile with a new optimizer "
                    "after growing the model."
                )
            starts[kind, id(variable)] = start
    return starts


def _grow(head, n, growth):
    """Grows the head and its slots as planned: all, or nothing.

    If a step fails, the head and every slot are put back as they were
    (the same variable objects, values and shapes) and the error is raised
    again.
    """
    variables = list(growth.weights)
    slots = [move.slot for v in variables for move in growth.moves[id(v)]]
    states = [(v, compat.variable_state(v)) for v in variables + slots]
    layer_state = compat.layer_variables_state(head)
    units, capacity = head.units, head.capacity
    undo = []
    try:
        pairs = head.expand(
            n,
            kernel_initializer=_GivenValue(growth.values[id(variables[0])]),
            bias_initializer=(
                _GivenValue(growth.values[id(variables[1])])
                if len(variables) > 1
                else None
            ),
        )
        for old, new in pairs:
            for move in growth.moves[id(old)]:
                _move_slot(move, new is old, new, undo)
            if new is not old:
                for optimizer, known in growth.optimizers:
                    if id(old) not in known:
                        continue
                    compat.replace_trainable_variable(optimizer, old, new)
                    undo.append(
                        lambda optimizer=optimizer, old=old, new=new: (
                            compat.replace_trainable_variable(
                                optimizer, new, old
                            )
                        )
                    )
    except BaseException as error:
        try:
            for step in reversed(undo):
                step()
            compat.restore_layer_variables(head, layer_state)
            head.units, head.capacity = units, capacity
            head.set_active_units(units)
            for variable, state in states:
                compat.restore_variable(variable, state)
        except Exception as failure:
            error.add_note(
                f"Putting the model back after this error failed too "
                f"({type(failure).__name__}: {failure}); the head "
                f"'{head.name}' and its optimizer state may be inconsistent."
            )
        raise


def _move_slot(move, in_place, new, undo):
    """Grows one slot in place, or puts its replacement in its place."""
    if in_place and compat.grow_variable(move.slot, move.value):
        return
    if in_place and tuple(move.slot.shape) == move.value.shape:
        # Within a head's spare capacity: the same slot, new values (put
        # back by `_grow` on failure with the other variable states).
        move.slot.assign(move.value)
        return
    replacement = move.replacement
    if replacement is None:
        replacement = compat.new_optimizer_variable(
            move.optimizer, new, move.slot, move.value
        )
    compat.replace_optimizer_variable(move.optimizer, move.slot, replacement)
    undo.append(
        lambda: compat.replace_optimizer_variable(
            move.optimizer, replacement, move.slot
        )
    )


def _plan_metrics(model, head):
    """The compiled metrics to resize; raises for those that cannot be."""
    width = head.units
    resized = []
    for metric in compat.compiled_metrics(model):
        if _is_lazily_built_metric(metric):
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
        if _is_lazily_built_metric(metric)
        and (
            not metric.variables
            or any(
                v.shape and v.shape[-1] != head.units for v in metric.variables
            )
        )
    ]
    _resize_metrics(stale, head)


def _is_lazily_built_metric(metric):
    """Whether `compat.reset_lazily_built_metric` can resize `metric`."""
    return isinstance(metric, keras.metrics.FBetaScore)


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
