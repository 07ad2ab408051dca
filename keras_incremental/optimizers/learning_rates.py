"""Per-layer learning rates, and rebuilding an optimizer with its state kept.

Scaling gradients does nothing under Adam (its update is scale-invariant), so
a per-layer learning rate needs its own optimizer for those layers: this
module groups the layers by multiplier, builds a `MultiplierOptimizer` (a
`keras.optimizers.MultiOptimizer` with one sub-optimizer per multiplier, all
following one base rate), and carries the optimizer state (slots and step
counters) from the optimizer it replaces.
"""

import re

import keras
from keras import ops

from keras_incremental import compat
from keras_incremental.models.growth import layers_matching
from keras_incremental.models.heads import iter_layers
from keras_incremental.optimizers.multiplier_optimizer import (
    MultiplierOptimizer,
)
from keras_incremental.optimizers.nesting import optimizer_children
from keras_incremental.optimizers.slots import copy_slots
from keras_incremental.optimizers.slots import leaf_optimizers
from keras_incremental.utils.checks import check_multiplier
from keras_incremental.utils.patterns import compile_pattern


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
        compile_pattern(pattern, "Learning-rate pattern")
        check_multiplier(pattern, multiplier)


def plan_groups(model, learning_rates):
    """Groups the model's layers by learning-rate multiplier.

    A pattern selects the layers with weights whose name it fully matches,
    at any depth; a nested model it selects stands for every layer inside it.
    The first pattern that selects a variable's layer gives its multiplier.
    The groups are checked against the model's variable paths, which the
    sub-optimizers are chosen by (`group_pattern`).

    Args:
        model: A Keras model.
        learning_rates: A dict mapping a layer name or regular expression
            to a learning-rate multiplier (> 0).

    Returns:
        A dict `multiplier -> sorted layer names`: the names of the layers
        that own the selected variables (the layers inside a selected nested
        model, not the model).

    Raises:
        ValueError: when a pattern matches no layer with weights, or when a
            group's pattern would miss one of its variables or reach a
            variable of another layer (layers of the same name in several
            nested models, variables whose path does not name their layer).
    """
    check_learning_rates(learning_rates)
    owners = _variable_owners(model)
    chosen = {}
    groups = {}
    for pattern, multiplier in learning_rates.items():
        for layer in layers_matching(model, pattern, "Learning-rate pattern"):
            for variable in layer.weights:
                if id(variable) in chosen:
                    continue
                chosen[id(variable)] = float(multiplier)
                owner = owners.get(id(variable), layer)
                groups.setdefault(float(multiplier), set()).add(owner.name)
    groups = {m: sorted(names) for m, names in groups.items()}
    _check_group_patterns(model, groups, chosen, owners)
    return groups


def _variable_owners(model):
    """`id(variable) -> the innermost layer of the model holding it`."""
    owners = {}
    # Depth first, outer layers before inner ones: the innermost stays.
    for layer in iter_layers(model):
        for variable in layer.weights:
            owners[id(variable)] = layer
    return owners


def _check_group_patterns(model, groups, chosen, owners):
    """Raises unless each group's pattern reaches exactly its variables."""
    patterns = {m: re.compile(group_pattern(n)) for m, n in groups.items()}
    for variable in model.weights:
        expected = chosen.get(id(variable))
        reached = [m for m, p in patterns.items() if p.fullmatch(variable.path)]
        if reached == ([] if expected is None else [expected]):
            continue
        owner = owners.get(id(variable))
        where = (
            f"variable '{variable.path}'"
            if owner is None
            else f"variable '{variable.path}' of layer '{owner.name}'"
        )
        if expected is not None and expected not in reached:
            raise ValueError(
                f"The learning-rate multiplier {expected} cannot reach "
                f"{where}: variables are given to the sub-optimizers by "
                "path, expected a path ending in '<layer name>/<variable "
                "name>' for a layer of the group "
                f"{groups[expected]}. Give the multiplier to the layer that "
                "names the variable, or leave this layer out."
            )
        others = [m for m in reached if m != expected]
        raise ValueError(
            f"The learning-rate group {groups[others[0]]} (multiplier "
            f"{others[0]}) would also reach {where}, which it does not "
            f"select (expected multiplier: {expected}): variables are given "
            "to the sub-optimizers by path, and layers of the same name in "
            "different nested models cannot be told apart. Rename one of the "
            "layers, or give them the same multiplier."
        )


def group_pattern(layer_names):
    """The `OptimizerMap` key matching the variables of `layer_names`.

    Variable paths run `<scopes>/<layer name>/<variable name>` (or deeper,
    for layers made of sublayers, such as `MultiHeadAttention`), and the
    scopes before the layer name differ between a model built in code and
    one `load_model` made (and do not always name a nested model), so the
    pattern anchors on the layer name only.
    """
    names = "|".join(re.escape(name) for name in layer_names)
    return f"(?:.*/)?(?:{names})/.+"


def base_learning_rate(optimizer):
    """The float learning rate of a plain optimizer or a
    `MultiplierOptimizer` (its base rate), or raises."""
    if isinstance(optimizer, MultiplierOptimizer):
        return float(ops.convert_to_numpy(optimizer.learning_rate))
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "Per-layer learning rates are not available with loss scaling "
            "(mixed_float16); expected a plain optimizer. Use the "
            "'mixed_bfloat16' policy or no `learning_rates`."
        )
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        raise ValueError(
            "A `keras.optimizers.MultiOptimizer` has no single learning rate "
            "to scale; expected a plain optimizer or a "
            "`keras_incremental.optimizers.MultiplierOptimizer`. Received: "
            f"{optimizer!r}"
        )
    rate = compat.stored_learning_rate(optimizer)
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
    """A `MultiplierOptimizer`: `template`'s kind, one group a multiplier.

    Args:
        template: The optimizer whose class and settings are copied: a plain
            one, or a `MultiOptimizer` (its default sub-optimizer's).
        base_rate: The learning rate of the variables in no group.
        groups: A dict `multiplier -> layer names`, from `plan_groups`.

    Returns:
        A new, unbuilt `MultiplierOptimizer`, its groups in increasing order
        of multiplier.
    """
    if isinstance(template, keras.optimizers.MultiOptimizer):
        template = template.optimizers[-1]  # The default one comes last.
    base = _clone(template, float(base_rate), template.name)
    multipliers = {
        group_pattern(names): multiplier
        for multiplier, names in sorted(groups.items())
    }
    return MultiplierOptimizer(base, multipliers, name="multi_optimizer")


def update_multipliers(optimizer, groups):
    """Gives `optimizer`'s groups the multipliers of `groups`, in place.

    Args:
        optimizer: The model's optimizer.
        groups: A dict `multiplier -> layer names`, from `plan_groups`.

    Returns:
        Whether it could: `optimizer` is a `MultiplierOptimizer` with the
        same groups of layers (only their multipliers may differ). When not,
        a new optimizer is needed (`multiplier_optimizer`).
    """
    if not isinstance(optimizer, MultiplierOptimizer):
        return False
    multipliers = {
        group_pattern(names): multiplier for multiplier, names in groups.items()
    }
    if set(multipliers) != set(optimizer.multipliers):
        return False
    optimizer.set_multipliers(multipliers)
    return True


def rebuild_optimizer(model, new_optimizer):
    """Builds `new_optimizer` on the model's trainable variables, state kept.

    Every slot of a variable that the current optimizer updated is copied into
    the new optimizer's slot of the same kind; the step counters continue. The
    new optimizer then becomes the model's (also for `model.save`).
    """
    old = getattr(model, "optimizer", None)
    variables = list(model.trainable_variables)
    # With every layer frozen (a fixed body under a head that the strategy
    # sets itself), the model's weights say where variables live.
    with compat.variable_scope_of((variables or model.weights)[0]):
        new_optimizer.build(variables)
    if old is not None and old.built:
        _copy_state(old, new_optimizer, variables)
    compat.set_model_optimizer(model, new_optimizer)
    compat.remake_compiled_functions(model)
    return new_optimizer


def _copy_state(old, new, variables):
    iterations = int(ops.convert_to_numpy(old.iterations))
    for optimizer in [new] + optimizer_children(new):
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
        if source is not None and target is not None:
            copy_slots(source, target, [(variable, variable)])
