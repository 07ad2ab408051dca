"""Per-layer learning rates, and rebuilding an optimizer with its state kept.

Scaling gradients does nothing under Adam (its update is scale-invariant), so
a per-layer learning rate needs its own optimizer for those layers: this
module builds a `keras.optimizers.MultiOptimizer` with one sub-optimizer per
multiplier, and carries the optimizer state (slots and step counters) from
the optimizer it replaces.
"""

import numbers
import re

import keras
import numpy as np
from keras import ops

from keras_incremental import compat
from keras_incremental.growth import layers_matching


def check_learning_rates(learning_rates):
    """Raises unless `learning_rates` maps patterns to positive multipliers."""
    if learning_rates is None:
        return
    if not isinstance(learning_rates, dict):
        raise TypeError(
            "Expected `learning_rates` to be a dict mapping a layer name or "
            "regular expression to a learning-rate multiplier, e.g. "
            f"{{'backbone_.*': 0.1}}. Received: "
            f"learning_rates={learning_rates!r}"
        )
    for pattern, multiplier in learning_rates.items():
        if not isinstance(pattern, str):
            raise TypeError(
                "Expected layer names or patterns as `learning_rates` keys. "
                f"Received: {pattern!r} of type {type(pattern).__name__}"
            )
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, numbers.Real)
            or not np.isfinite(multiplier)
            or multiplier <= 0
        ):
            raise ValueError(
                f"Received an invalid learning-rate multiplier for "
                f"{pattern!r}: expected a finite number > 0. Received: "
                f"{multiplier!r}"
            )


def plan_groups(model, learning_rates):
    """Groups the model's layers by learning-rate multiplier.

    Returns:
        A dict `multiplier -> sorted layer names` for the layers with
        weights whose name matches a pattern (the first matching pattern
        wins).

    Raises:
        ValueError: when a pattern matches no layer with weights.
    """
    check_learning_rates(learning_rates)
    groups = {}
    claimed = set()
    for pattern, multiplier in learning_rates.items():
        matches = layers_matching(model, pattern, "Learning-rate pattern")
        for layer in matches:
            if layer.name not in claimed:
                claimed.add(layer.name)
                groups.setdefault(float(multiplier), []).append(layer.name)
    return {m: sorted(names) for m, names in groups.items()}


def group_pattern(layer_names):
    """The `OptimizerMap` key matching the variables of `layer_names`.

    Variable paths end in `<layer name>/<variable name>`, and what comes
    before differs between a model built in code and one `load_model` made,
    so the pattern anchors on the layer name only.
    """
    names = "|".join(re.escape(name) for name in layer_names)
    return f"(?:.*/)?(?:{names})/[^/]+"


def base_learning_rate(optimizer):
    """The float learning rate of a plain optimizer, or raises."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "Per-layer learning rates are not available with loss scaling "
            "(mixed_float16); expected a plain optimizer. Use the "
            "'mixed_bfloat16' policy or no `learning_rates`."
        )
    rate = optimizer._learning_rate
    if not isinstance(rate, keras.Variable):
        raise ValueError(
            "Per-layer learning rates need a constant learning rate, "
            "expected a float. Received a learning-rate schedule or "
            f"callable: {rate!r}"
        )
    return float(ops.convert_to_numpy(rate))


def _clone(optimizer, learning_rate, name):
    config = optimizer.get_config()
    config.update(learning_rate=learning_rate, name=name)
    return type(optimizer).from_config(config)


def multiplier_optimizer(template, base_rate, groups):
    """A `MultiOptimizer`: `template`'s kind, one sub-optimizer a multiplier.

    Args:
        template: A plain optimizer whose class and settings are copied.
        base_rate: The learning rate of the variables in no group.
        groups: A dict `multiplier -> layer names`, from `plan_groups`.
    """
    default = _clone(template, base_rate, f"{template.name}_default")
    mapping = keras.optimizers.OptimizerMap(default)
    for index, (multiplier, names) in enumerate(sorted(groups.items())):
        mapping[group_pattern(names)] = _clone(
            template, base_rate * multiplier, f"{template.name}_group_{index}"
        )
    return keras.optimizers.MultiOptimizer(mapping, name="multi_optimizer")


def leaf_optimizers(optimizer):
    """The optimizers that hold slots: `optimizer` or those it wraps."""
    children = compat.optimizer_children(optimizer)
    if not children:
        return [optimizer]
    leaves = []
    for child in children:
        leaves.extend(leaf_optimizers(child))
    return leaves


def rebuild_optimizer(model, new_optimizer):
    """Builds `new_optimizer` on the model's trainable variables, state kept.

    Every slot of a variable that the current optimizer updated is copied into
    the new optimizer's slot of the same kind; the step counters continue. The
    new optimizer then becomes the model's (also for `model.save`).
    """
    old = getattr(model, "optimizer", None)
    variables = list(model.trainable_variables)
    with compat.variable_scope_of(variables[0]):
        new_optimizer.build(variables)
    if old is not None and old.built:
        _copy_state(old, new_optimizer, variables)
    compat.set_model_optimizer(model, new_optimizer)
    compat.remake_compiled_functions(model)
    return new_optimizer


def _copy_state(old, new, variables):
    iterations = int(ops.convert_to_numpy(old.iterations))
    for optimizer in [new] + compat.optimizer_children(new):
        compat.set_optimizer_iterations(optimizer, iterations)
    old_leaves = [o for o in leaf_optimizers(old) if o.built]
    new_leaves = [o for o in leaf_optimizers(new) if o.built]
    for variable in variables:
        source = next(
            (o for o in old_leaves if compat.optimizer_knows(o, variable)), None
        )
        target = next(
            (o for o in new_leaves if compat.optimizer_knows(o, variable)), None
        )
        if source is None or target is None:
            continue
        source_slots = dict(compat.optimizer_slot_lists(source))
        source_index = compat.optimizer_variable_index(source, variable)
        target_index = compat.optimizer_variable_index(target, variable)
        for kind, slots in compat.optimizer_slot_lists(target):
            slot = slots[target_index]
            if slot is None or kind not in source_slots:
                continue
            value = source_slots[kind][source_index]
            if value is not None and tuple(value.shape) == tuple(slot.shape):
                slot.assign(value.value)
