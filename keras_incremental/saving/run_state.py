"""The run's state: one value, one schema, written, checked and read back.

`RunState` is what an `IncrementalModel` has learned of its run apart from
the model and the memory: the finished stages, their classes and records.
The checkpoint's `state.json` is `RunState.to_json()`, and
`RunState.from_json` reads it back. A checkpoint may come from someone else,
so `from_json` reads its state as
untrusted data: every key, type and range is checked, and patterns are
compiled with bounded matching time, before any of it is used. Paths are not
part of the state: where a restored run writes (checkpoint, report, serving
export) is decided by the caller of `IncrementalModel.restore`, never by the
file.

Format versions: 1 (up to 0.1.0) also held the run's output paths, which
are ignored; 2 adds the run's id, what the file cannot hold (evaluation
data, a callable `freeze`) and the last stage exported for serving.
"""

import dataclasses
import math
import numbers

from keras_incremental.data.labels import LabelEncoder
from keras_incremental.strategies import PARTS
from keras_incremental.utils.patterns import compile_pattern

FORMAT_VERSION = 2
MAX_CLASSES = 1_000_000
MAX_NAME_LENGTH = 1024
# Integers of the state (stage, seed, budget) fit NumPy's int64 and seeds.
MAX_INTEGER = 2**63 - 1
_OUTPUT_PATHS = ("checkpoint", "report", "export_dir")


@dataclasses.dataclass(frozen=True)
class RunState:
    """The records of a run's finished stages, as one immutable value.

    `IncrementalModel` holds one, replaces it when a stage is committed,
    writes it into every checkpoint (`to_json`) and reads it back from one
    (`from_json`, which checks every field as untrusted data).

    Attributes:
        stage: The number of finished stages.
        run: The run's id (recorded in its serving exports).
        classes: The class names of the finished stages, in index order.
        settings: The run's options that a file holds, JSON-able (see
            `RunOptions.settings`): `strategy` (serialized), `memory_size`,
            `head`, `freeze`, `learning_rates`, `seed`.
        history: One record per finished stage (see `evaluation.stage_record`).
        stage_classes: The class indices each finished stage brought.
        groups: The per-layer learning-rate groups in use
            (multiplier -> layer paths), or `None`.
        base_rate: The base learning rate under those groups, or `None`.
        exported: The last stage exported for serving.
        evaluation: Whether the run had evaluation data (a file does not
            hold it).
        freeze_callable: Whether the run froze layers with a callable (a
            file does not hold it).
        head_frozen_by_strategy: Whether the head is frozen because the
            strategy sets its weights itself (`Strategy.trains_head`), so
            that a run restored with one that trains it unfreezes it.
        body_frozen_by_strategy: Likewise for the layers below the head,
            frozen because the strategy keeps the features fixed
            (`Strategy.trains_body`).
    """

    stage: int = 0
    run: str = ""
    classes: tuple = ()
    settings: dict = dataclasses.field(default_factory=dict)
    history: tuple = ()
    stage_classes: tuple = ()
    groups: dict = None
    base_rate: float = None
    exported: int = 0
    evaluation: bool = False
    freeze_callable: bool = False
    head_frozen_by_strategy: bool = False
    body_frozen_by_strategy: bool = False

    def replace(self, **changes):
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        """The state as `state.json` holds it (without `format`)."""
        return state_to_json(
            {
                "stage": self.stage,
                "run": self.run,
                "encoder": LabelEncoder(list(self.classes) or None).to_config(),
                "settings": self.settings,
                "evaluation": self.evaluation,
                "freeze_callable": self.freeze_callable,
                "head_frozen_by_strategy": self.head_frozen_by_strategy,
                "body_frozen_by_strategy": self.body_frozen_by_strategy,
                "exported": self.exported,
                "history": list(self.history),
                "stage_classes": [list(g) for g in self.stage_classes],
                "groups": None
                if self.groups is None
                else {str(m): list(p) for m, p in self.groups.items()},
                "base_rate": self.base_rate,
            }
        )

    @classmethod
    def from_json(cls, state, path):
        """Checks a parsed `state.json` and returns its `RunState`.

        Args:
            state: The parsed `state.json`, untrusted.
            path: The checkpoint's path, for error messages.

        Returns:
            A `RunState`.

        Raises:
            ValueError: naming the file, the key and the problem, for a
                newer or unknown format, a missing key, a value of the
                wrong type or range, or parts that disagree (history and
                stage count).
        """
        checked = check_state(state, path)
        return cls(
            stage=checked["stage"],
            run=checked["run"],
            classes=tuple(checked["encoder"].classes_),
            settings=checked["settings"],
            history=tuple(checked["history"]),
            stage_classes=tuple(checked["stage_classes"]),
            groups=checked["groups"],
            base_rate=checked["base_rate"],
            exported=checked["exported"] or 0,
            evaluation=checked["evaluation"],
            freeze_callable=checked["freeze_callable"],
            head_frozen_by_strategy=checked["head_frozen_by_strategy"],
            body_frozen_by_strategy=checked["body_frozen_by_strategy"],
        )


# The keys of `state.json`: `RunState`'s fields, its class names as the
# encoder's config, and the format version.
_KEYS = {
    "format",
    "encoder",
    *(f.name for f in dataclasses.fields(RunState) if f.name != "classes"),
}


def state_to_json(state):
    """`state` with NaN floats as `None`, for strict JSON."""
    if isinstance(state, dict):
        return {key: state_to_json(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [state_to_json(value) for value in state]
    if isinstance(state, float) and not math.isfinite(state):
        return None
    return state


def check_state(state, path):
    """Checks a checkpoint's state and returns it in the current format.

    Args:
        state: The parsed `state.json`.
        path: The checkpoint's path, for error messages.

    Returns:
        A new dict: `stage`, `run`, `encoder` (a `LabelEncoder`),
        `settings` (constructor keywords without output paths),
        `history`, `stage_classes`, `groups`, `base_rate`, `exported`,
        `evaluation` and `freeze_callable` (whether the run had evaluation
        data or a callable `freeze`, which the file cannot hold).

    Raises:
        ValueError: naming the file, the key and the problem, for a newer
            or unknown format, a missing key, a value of the wrong type or
            range, or parts that disagree (history and stage count).
    """
    check = _Checker(path)
    check.kind(state, dict, "the state")
    unknown = sorted(set(state) - _KEYS)
    if unknown:
        check.fail("the state", f"has unknown keys {unknown[:5]}")
    version = check.integer(state, "format", 1)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint '{path}' has state format {version}, newer than "
            f"this version of keras_incremental reads (format "
            f"{FORMAT_VERSION}); expected a format <= {FORMAT_VERSION}. "
            "Upgrade keras-incremental to restore it."
        )
    stage = check.integer(state, "stage", 0)
    try:
        encoder = LabelEncoder.from_config(check.key(state, "encoder"))
    except (TypeError, ValueError) as error:
        check.fail("encoder", f"is not a class list ({error})")
    if len(encoder) > MAX_CLASSES:
        check.fail("encoder", f"holds {len(encoder)} classes")
    for name in encoder.classes_:
        if isinstance(name, (str, bytes)) and len(name) > MAX_NAME_LENGTH:
            check.fail(
                "encoder", f"holds a class name of {len(name)} characters"
            )
    settings = _check_settings(check, check.key(state, "settings"))
    history = check.key(state, "history")
    check.kind(history, list, "history")
    if len(history) != stage:
        check.fail("history", f"has {len(history)} entries for {stage} stages")
    history = [_check_entry(check, entry, i) for i, entry in enumerate(history)]
    stage_classes = _check_stage_classes(
        check, check.key(state, "stage_classes"), stage, len(encoder)
    )
    groups = state.get("groups")
    if groups is not None:
        groups = _check_groups(check, groups)
    base_rate = state.get("base_rate")
    if base_rate is not None:
        base_rate = check.number(base_rate, "base_rate", positive=True)
    if (groups is None) != (base_rate is None):
        check.fail("groups", "and 'base_rate' must be given together")
    exported = state.get("exported")
    if exported is not None:
        exported = check.integer(state, "exported", 0)
        if exported > stage:
            check.fail("exported", f"is {exported}, past stage {stage}")
    run = state.get("run", "")
    check.kind(run, str, "run")
    if len(run) > 64:
        check.fail("run", "is longer than 64 characters")
    return {
        "stage": stage,
        "run": run,
        "encoder": encoder,
        "settings": settings,
        "history": history,
        "stage_classes": stage_classes,
        "groups": groups,
        "base_rate": base_rate,
        "exported": exported,
        "evaluation": check.flag(state, "evaluation"),
        "freeze_callable": check.flag(state, "freeze_callable"),
        "head_frozen_by_strategy": check.flag(state, "head_frozen_by_strategy"),
        "body_frozen_by_strategy": check.flag(state, "body_frozen_by_strategy"),
    }


def _check_settings(check, settings):
    check.kind(settings, dict, "settings")
    known = {
        "strategy",
        "memory_size",
        "head",
        "freeze",
        "learning_rates",
        "seed",
        *_OUTPUT_PATHS,
    }
    unknown = sorted(set(settings) - known)
    if unknown:
        check.fail("settings", f"has unknown keys {unknown[:5]}")
    out = {
        "strategy": _check_strategy(check, check.key(settings, "strategy")),
        "memory_size": check.integer(settings, "memory_size", 0),
        "seed": check.integer(settings, "seed", 0),
    }
    head = settings.get("head")
    if head is not None:
        check.name(head, "settings.head")
    out["head"] = head
    freeze = settings.get("freeze")
    if freeze is not None:
        patterns = [freeze] if isinstance(freeze, str) else freeze
        check.kind(patterns, list, "settings.freeze")
        for pattern in patterns:
            check.pattern(pattern, "settings.freeze")
    out["freeze"] = freeze
    rates = settings.get("learning_rates")
    if rates is not None:
        check.kind(rates, dict, "settings.learning_rates")
        for pattern, multiplier in rates.items():
            check.pattern(pattern, "settings.learning_rates")
            check.number(multiplier, "settings.learning_rates", positive=True)
    out["learning_rates"] = rates
    # Output paths of format 1 are ignored: the caller of `restore` says
    # where the restored run writes.
    return out


def _check_strategy(check, strategy):
    check.kind(strategy, dict, "settings.strategy")
    check.name(check.key(strategy, "name"), "settings.strategy.name")
    parts = check.key(strategy, "parts")
    check.kind(parts, list, "settings.strategy.parts")
    for part in parts:
        check.kind(part, dict, "settings.strategy.parts")
        name = check.key(part, "class")
        if name not in PARTS:
            # Left to `strategies.deserialize`, whose error says to pass the
            # strategy to `restore`; only the type is checked here.
            check.name(name, "settings.strategy.parts.class")
        config = check.key(part, "config")
        check.kind(config, dict, "settings.strategy.parts.config")
        for key in config:
            check.name(key, "settings.strategy.parts.config")
    return strategy


def _check_entry(check, entry, index):
    where = f"history[{index}]"
    check.kind(entry, dict, where)
    out = dict(entry)
    stage = entry.get("stage", index)
    if isinstance(stage, bool) or not isinstance(stage, numbers.Integral):
        check.fail(where, f"has a 'stage' of {stage!r}")
    if ("row" in entry) != ("accuracy" in entry):
        check.fail(where, "has one of 'row' and 'accuracy'; expected both")
    if "row" in entry:
        row = entry["row"]
        check.kind(row, list, f"{where}.row")
        if len(row) != index + 1:
            check.fail(
                f"{where}.row", f"has {len(row)} values; expected {index + 1}"
            )
        out["row"] = [_accuracy(check, value, f"{where}.row") for value in row]
    if "accuracy" in entry:
        out["accuracy"] = _accuracy(
            check, entry["accuracy"], f"{where}.accuracy"
        )
    if "adopted" in entry:
        check.kind(entry["adopted"], bool, f"{where}.adopted")
    return out


def _accuracy(check, value, where):
    if value is None:
        return math.nan
    value = check.number(value, where)
    if not math.isnan(value) and not 0.0 <= value <= 1.0:
        check.fail(where, f"holds {value}, outside [0, 1]")
    return value


def _check_stage_classes(check, groups, stage, n_classes):
    check.kind(groups, list, "stage_classes")
    if len(groups) != stage:
        check.fail(
            "stage_classes", f"has {len(groups)} groups for {stage} stages"
        )
    seen = set()
    out = []
    for group in groups:
        check.kind(group, list, "stage_classes")
        for index in group:
            if (
                isinstance(index, bool)
                or not isinstance(index, int)
                or not 0 <= index < n_classes
            ):
                check.fail(
                    "stage_classes",
                    f"holds {index!r}; expected class indices in "
                    f"[0, {n_classes})",
                )
            if index in seen:
                check.fail("stage_classes", f"holds class {index} twice")
            seen.add(index)
        out.append(list(group))
    if seen != set(range(n_classes)):
        check.fail(
            "stage_classes",
            f"covers {len(seen)} of the {n_classes} classes; expected every "
            "class in exactly one stage",
        )
    return out


def _check_groups(check, groups):
    check.kind(groups, dict, "groups")
    out = {}
    for multiplier, names in groups.items():
        try:
            value = float(multiplier)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            check.fail("groups", f"has a multiplier {multiplier!r}")
        check.kind(names, list, "groups")
        for name in names:
            check.name(name, "groups")
        out[value] = list(names)
    return out


class _Checker:
    """Raises `ValueError`s that name the checkpoint and the state's key."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, problem):
        raise ValueError(
            f"Checkpoint '{self.path}' is not valid: in state.json, "
            f"'{where}' {problem}. Expected a file written by "
            "`IncrementalModel(checkpoint=...)`; nothing was changed."
        )

    def key(self, mapping, key):
        if key not in mapping:
            self.fail(key, "is missing")
        return mapping[key]

    def kind(self, value, kind, where):
        if not isinstance(value, kind):
            self.fail(
                where,
                f"is a {type(value).__name__}; expected a {kind.__name__}",
            )

    def flag(self, mapping, key):
        value = mapping.get(key, False)
        self.kind(value, bool, key)
        return value

    def integer(self, mapping, key, minimum):
        value = self.key(mapping, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"is {value!r}; expected an integer")
        if not minimum <= value <= MAX_INTEGER:
            self.fail(
                key, f"is {value}; expected an integer in [{minimum}, 2**63)"
            )
        return value

    def number(self, value, where, positive=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"holds {value!r}; expected a number")
        if positive and not (math.isfinite(value) and value > 0):
            self.fail(where, f"holds {value!r}; expected a number > 0")
        return float(value)

    def name(self, value, where):
        self.kind(value, str, where)
        if len(value) > MAX_NAME_LENGTH:
            self.fail(where, f"holds a name of {len(value)} characters")

    def pattern(self, value, where):
        self.kind(value, str, where)
        try:
            compile_pattern(value, "Pattern")
        except ValueError as error:
            self.fail(where, f"holds an unsafe pattern: {error}")
