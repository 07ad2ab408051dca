"""`MultiplierOptimizer`: one base learning rate, multiplied per group."""

import re

import keras
from keras import ops

from keras_incremental import compat
from keras_incremental.utils.checks import check_multiplier


@keras.saving.register_keras_serializable(package="keras_incremental")
class MultiplierOptimizer(keras.optimizers.MultiOptimizer):
    """A `MultiOptimizer` whose groups train at multiples of one base rate.

    Variables whose path fully matches a pattern of `multipliers` are updated
    by a copy of `optimizer` (same class and settings, own slots) whose
    learning rate is the base rate times the pattern's multiplier; all other
    variables by `optimizer` itself, at the base rate. Unlike a plain
    `keras.optimizers.MultiOptimizer`, it has a `learning_rate`: the base
    rate. Setting it (as `keras.callbacks.LearningRateScheduler` and
    `ReduceLROnPlateau` do) moves every group with it, so the ratios between
    the groups stay those of `multipliers`.

    A group's learning rate is computed from the base rate whenever it is
    read, so it cannot drift: setting the `learning_rate` of a group's
    sub-optimizer directly has no effect. (Keras's learning-rate callbacks set
    each sub-optimizer of a `MultiOptimizer` in turn, the base one last; they
    so change the base rate, which the groups follow.) Change a group's
    multiplier with `set_multipliers` instead.

    Registered for saving: `model.save` and `keras.models.load_model` keep
    the base rate, the multipliers and the state of every sub-optimizer.

    Args:
        optimizer: A Keras optimizer with a float learning rate (not a
            schedule), not wrapped (no `LossScaleOptimizer` or
            `MultiOptimizer`). It updates the variables of no group, and
            each group gets a copy of it.
        multipliers: A dict mapping a regular expression, matched in full
            against variable paths (as in `keras.optimizers.OptimizerMap`),
            to a learning-rate multiplier, a finite number > 0. A variable
            must match at most one pattern.
        loss_scale_factor: Optional factor that the loss is multiplied by
            before gradients are computed, passed on to the sub-optimizers.
            Defaults to `None`.
        name: Optional name of the optimizer. Defaults to `None`, a name
            made from the class name.

    Example:

    ```python
    optimizer = keras_incremental.optimizers.MultiplierOptimizer(
        keras.optimizers.Adam(1e-3),
        {"(?:.*/)?backbone_[0-9]+/.+": 0.1},
    )
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.learning_rate = 1e-4  # the backbone layers now train at 1e-5
    ```
    """

    def __init__(
        self, optimizer, multipliers, loss_scale_factor=None, name=None
    ):
        _check_base_optimizer(optimizer)
        multipliers = _checked_multipliers(multipliers)
        mapping = keras.optimizers.OptimizerMap(optimizer)
        for index, pattern in enumerate(multipliers):
            config = optimizer.get_config()
            config["name"] = f"{optimizer.name}_group_{index}"
            mapping[pattern] = type(optimizer).from_config(config)
        super().__init__(
            mapping, loss_scale_factor=loss_scale_factor, name=name
        )
        # Kept in a dict, not a list: a list of variables as long as the
        # optimizer's variable list would pass for a slot list.
        self._multiplier_variables = {}
        for index, (pattern, multiplier) in enumerate(multipliers.items()):
            with keras.name_scope(self.name, caller=self):
                variable = keras.Variable(
                    multiplier,
                    name=f"multiplier_{index}",
                    dtype="float32",
                    trainable=False,
                    aggregation="only_first_replica",
                )
            compat.track_optimizer_variable(self, variable)
            self._multiplier_variables[pattern] = variable
            mapping[pattern].learning_rate = _ScaledRate(optimizer, variable)

    @property
    def base_optimizer(self):
        """The sub-optimizer of the variables in no group."""
        return compat.multi_optimizer_map(self).default_optimizer

    @property
    def learning_rate(self):
        return self.base_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.base_optimizer.learning_rate = value

    @property
    def multipliers(self):
        """A dict mapping each group's pattern to its multiplier."""
        return {
            pattern: float(ops.convert_to_numpy(variable))
            for pattern, variable in self._multiplier_variables.items()
        }

    def set_multipliers(self, multipliers):
        """Sets the multipliers of the groups, which stay as they are.

        Takes effect at the next step, also in a train function traced
        before (the multipliers are variables).

        Args:
            multipliers: A dict mapping each pattern of the optimizer to its
                new multiplier, a finite number > 0.

        Raises:
            ValueError: when the patterns are not exactly the optimizer's, or
                a multiplier is not a finite number > 0.
        """
        multipliers = _checked_multipliers(multipliers)
        if set(multipliers) != set(self._multiplier_variables):
            raise ValueError(
                "`set_multipliers` changes the multipliers of the existing "
                "groups only; expected exactly the patterns "
                f"{list(self._multiplier_variables)}. Received: "
                f"{list(multipliers)}. Make a new `MultiplierOptimizer` to "
                "change the groups."
            )
        for pattern, multiplier in multipliers.items():
            self._multiplier_variables[pattern].assign(multiplier)

    def get_config(self):
        return {
            "optimizer": keras.saving.serialize_keras_object(
                self.base_optimizer
            ),
            "multipliers": self.multipliers,
            "loss_scale_factor": self.loss_scale_factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


class _ScaledRate:
    """A group's learning rate: the base rate times the group's multiplier.

    Set as a sub-optimizer's `learning_rate` (a callable, which Keras
    optimizers call at every step), it follows the base optimizer's rate.
    """

    def __init__(self, base_optimizer, multiplier):
        self.base_optimizer = base_optimizer
        self.multiplier = multiplier

    def __call__(self):
        return ops.multiply(self.base_optimizer.learning_rate, self.multiplier)

    def assign(self, value):
        # Keras's learning-rate callbacks set every sub-optimizer in turn,
        # the base one last: its rate is the one to keep.
        del value

    def get_config(self):
        return {"multiplier": float(ops.convert_to_numpy(self.multiplier))}


def _check_base_optimizer(optimizer):
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer,
        (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer),
    ):
        raise TypeError(
            "Expected `optimizer` to be a plain Keras optimizer (such as "
            "`keras.optimizers.Adam()`), not wrapped in a `MultiOptimizer` or "
            f"`LossScaleOptimizer`. Received: optimizer={optimizer!r}"
        )
    rate = optimizer.learning_rate
    if not isinstance(rate, keras.Variable):
        raise ValueError(
            "`MultiplierOptimizer` needs a constant learning rate that the "
            "groups can follow; expected an optimizer made with a float "
            f"`learning_rate`. Received a learning rate of {rate!r}"
        )


def _checked_multipliers(multipliers):
    if not isinstance(multipliers, dict):
        raise TypeError(
            "Expected `multipliers` to be a dict mapping a variable-path "
            "pattern to a learning-rate multiplier. Received: "
            f"multipliers={multipliers!r}"
        )
    checked = {}
    for pattern, multiplier in multipliers.items():
        if not isinstance(pattern, str):
            raise TypeError(
                "Expected regular expressions as `multipliers` keys. "
                f"Received: {pattern!r} of type {type(pattern).__name__}"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"Multiplier pattern {pattern!r} is not a valid regular "
                f"expression ({error}); expected one matching variable paths."
            ) from error
        checked[pattern] = check_multiplier(pattern, multiplier)
    return checked
