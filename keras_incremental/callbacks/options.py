"""The options of an `IncrementalModel`, each checked whenever it is set.

One `RunOptions` holds them; the callback reads and writes them through
`Option` descriptors, so that `inc.freeze = "backbone"` between two stages is
checked there and then, exactly as the constructor checks it, and an option
that cannot change once the run exists (the memory's budget and seed, the
head) is refused with a message saying why.
"""

import numpy as np

from keras_incremental import strategies
from keras_incremental.callbacks.capacity import check_capacity_fits
from keras_incremental.data import stage_data
from keras_incremental.models.freezing import check_freeze_spec
from keras_incremental.models.freezing import layers_to_freeze
from keras_incremental.models.heads import find_head
from keras_incremental.models.limits import check_growable_head
from keras_incremental.optimizers.learning_rates import check_learning_rates
from keras_incremental.optimizers.learning_rates import plan_groups
from keras_incremental.saving import checkpoint as checkpoints
from keras_incremental.saving.destinations import check_destination
from keras_incremental.utils.checks import check_integer
from keras_incremental.utils.checks import check_path
from keras_incremental.utils.checks import check_unit_count


def _strategy(value):
    return strategies.get(value)


def _memory_size(value):
    return check_unit_count(value, "memory_size", 0)


def _checkpoint(value):
    return None if value is None else checkpoints.check_checkpoint_path(value)


def _head(value):
    if value is not None and not isinstance(value, str):
        raise TypeError(
            "Expected `head` to be a layer name or None. "
            f"Received: head={value!r}"
        )
    return value


def _freeze(value):
    check_freeze_spec(value)
    return value


def _learning_rates(value):
    check_learning_rates(value)
    return value


def _seed(value):
    # NumPy's random generators take no other.
    return check_integer(value, "seed", 0, maximum=2**63 - 1)


def _evaluation(value):
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            "Expected `evaluation` to be a tuple `(x_test, y_test)`. "
            f"Received: {type(value).__name__}"
        )
    x = np.asarray(value[0])
    y = stage_data.normalize_labels(value[1], "evaluation labels")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "Expected `evaluation` as `(x_test, y_test)` with one label per "
            f"sample. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    return x, y


def _report(value):
    return None if value is None else check_path(value, "report", ".json")


def _export_dir(value):
    if value is None:
        return None
    return check_path(value, "export_dir", folder=True)


def _capacity(value):
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise ValueError(
            "Received an invalid value for `capacity`, expected a positive "
            f'integer, None or "auto". Received: capacity={value!r}'
        )
    return check_unit_count(value, "capacity", 1)


# Each option and its check, in the constructor's order.
CHECKS = {
    "strategy": _strategy,
    "memory_size": _memory_size,
    "checkpoint": _checkpoint,
    "head": _head,
    "freeze": _freeze,
    "learning_rates": _learning_rates,
    "seed": _seed,
    "evaluation": _evaluation,
    "report": _report,
    "export_dir": _export_dir,
    "capacity": _capacity,
}
# Options that the run's parts are made with: `memory_size` and `seed` make
# the exemplar memory (its budget is checked against every checkpoint), and
# `head` names the layer every stage grows.
FIXED = {
    "memory_size": "it is the budget of the run's exemplar memory",
    "seed": "the exemplar memory draws from it",
    "head": "every stage of the run grows the same layer",
}


class RunOptions:
    """The checked options of one run (see `IncrementalModel` for each).

    Setting an attribute checks the value as the constructor does; one of
    `FIXED` can be set again only to the value it has.

    Args:
        **values: One value per name of `CHECKS`.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(memory_size=200)
    inc.freeze = "backbone"  # checked here, by `inc.options`
    inc.memory_size = 100  # ValueError: fixed during a run
    ```
    """

    def __init__(self, **values):
        missing = sorted(set(CHECKS) - set(values))
        if missing:
            raise TypeError(f"Missing options: {missing}")
        for name, value in values.items():
            self._set(name, value)

    def _set(self, name, value):
        if name not in CHECKS:
            raise TypeError(
                f"Unknown option `{name}`; expected one of {sorted(CHECKS)}."
            )
        object.__setattr__(self, name, CHECKS[name](value))

    def __setattr__(self, name, value):
        if name in FIXED:
            value = CHECKS[name](value)
            if value != getattr(self, name):
                raise ValueError(
                    f"`{name}` cannot change during a run: {FIXED[name]}. "
                    f"Expected {name}={getattr(self, name)!r}, the run's. "
                    f"Received: {name}={value!r}. Make a new "
                    "`IncrementalModel` for another one. Nothing was changed."
                )
            return
        self._set(name, value)

    def check_against(self, model):
        """Checks the options against `model` (their own values were
        checked when set): the head, the layers `freeze` and
        `learning_rates` name, and a spare capacity's layout.

        Raises:
            ValueError, TypeError: for an option that does not fit `model`.
        """
        # A dict or list changed in place was not checked when set.
        check_freeze_spec(self.freeze)
        check_learning_rates(self.learning_rates)
        check_growable_head(model, self.head)
        head = find_head(model, self.head)
        layers_to_freeze(model, head, self.freeze)
        if self.learning_rates:
            plan_groups(model, self.learning_rates)
        if self.capacity not in (None, "auto"):
            check_capacity_fits(model, head, self.capacity)

    def check_destinations(self):
        """Checks that the run's outputs can be written, before training.

        Raises:
            ValueError: for a destination that cannot be written.
        """
        if self.checkpoint is not None:
            check_destination(self.checkpoint, "checkpoint")
        if self.report is not None:
            check_destination(self.report, "report")
        if self.export_dir is not None:
            check_destination(self.export_dir, "export_dir", folder=True)

    def settings(self):
        """The options a checkpoint holds, JSON-able (`RunState.settings`):
        neither the output paths, which the caller of `restore` gives, nor
        the evaluation data, nor a callable `freeze`."""
        freeze = None if callable(self.freeze) else self.freeze
        return {
            "strategy": strategies.serialize(self.strategy),
            "memory_size": self.memory_size,
            "head": self.head,
            "freeze": list(freeze) if isinstance(freeze, tuple) else freeze,
            "learning_rates": self.learning_rates,
            "seed": self.seed,
        }


class Option:
    """An attribute of the callback that is an option of its `RunOptions`.

    Reading gives `instance.options.<name>`; writing checks the value there.
    """

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return getattr(instance.options, self.name)

    def __set__(self, instance, value):
        setattr(instance.options, self.name, value)
