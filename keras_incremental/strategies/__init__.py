"""Strategies against forgetting, by name or as composable objects.

| name | what it is |
| --- | --- |
| `"finetune"` | nothing: the baseline that forgets |
| `"replay"` | `Replay()`: exemplars of old classes mixed into each stage |
| `"lwf"` | `Distillation()`: Learning without Forgetting |
| `"icarl"` | herding replay + distillation + nearest-mean prediction |
| `"ewc"` | `EWC()`: elastic weight consolidation |
| `"wa"` | replay + distillation + `WeightAligning()` |
| `"der++"` | replay + `LogitReplay()`: dark experience replay |
| `"default"` | replay, balanced loss, distillation, WA, label smoothing |
| `"analytic"` | `Analytic()`: a ridge head on fixed features, no exemplars |
"""

from keras_incremental.strategies.analytic import Analytic
from keras_incremental.strategies.asymmetric_loss import AsymmetricLoss
from keras_incremental.strategies.balanced_loss import BalancedLoss
from keras_incremental.strategies.distillation import Distillation
from keras_incremental.strategies.ewc import EWC
from keras_incremental.strategies.label_smoothing import LabelSmoothing
from keras_incremental.strategies.logit_replay import LogitReplay
from keras_incremental.strategies.nearest_mean import NearestMeanOfExemplars
from keras_incremental.strategies.replay import Replay
from keras_incremental.strategies.strategy import Combine
from keras_incremental.strategies.strategy import StageContext
from keras_incremental.strategies.strategy import Strategy
from keras_incremental.strategies.weight_aligning import WeightAligning
from keras_incremental.utils.checks import check_bool


def finetune():
    """Plain fine-tuning on each stage's data: the baseline."""
    return Strategy()


def icarl(nme=True):
    """iCaRL: herding exemplars, distillation and, with `nme` (a bool), the
    nearest-mean-of-exemplars classifier in `IncrementalModel.predict`."""
    parts = [Replay(selection="herding"), Distillation()]
    if check_bool(nme, "nme"):
        parts.append(NearestMeanOfExemplars())
    return Combine(*parts, name="icarl")


def wa():
    """Weight aligning with replay and distillation, as in the paper."""
    return Combine(Replay(), Distillation(), WeightAligning(), name="wa")


def der_plus_plus():
    """DER++: replay of labels and of stored logits."""
    return Combine(Replay(), LogitReplay(), name="der++")


def default():
    """The best combination measured on the benchmark (see
    `benchmarks/RESULTS.md`): replay with a class-balanced loss,
    distillation from the previous stage, weight aligning of the head, and
    label smoothing."""
    return Combine(
        Replay(),
        BalancedLoss(),
        Distillation(),
        WeightAligning(),
        LabelSmoothing(0.1),
        name="default",
    )


NAMED = {
    "finetune": finetune,
    "replay": Replay,
    "lwf": Distillation,
    "icarl": icarl,
    "ewc": EWC,
    "wa": wa,
    "der++": der_plus_plus,
    "default": default,
    "analytic": Analytic,
}

PARTS = {
    cls.__name__: cls
    for cls in (
        Strategy,
        Analytic,
        AsymmetricLoss,
        BalancedLoss,
        Replay,
        Distillation,
        EWC,
        WeightAligning,
        LabelSmoothing,
        LogitReplay,
        NearestMeanOfExemplars,
    )
}


def get(identifier):
    """A strategy from a name in `NAMED`, a `Strategy`, or `None` (default).

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything else.
    """
    if identifier is None:
        return default()
    if isinstance(identifier, Strategy):
        return identifier
    if isinstance(identifier, str):
        if identifier not in NAMED:
            raise ValueError(
                f"Unknown strategy {identifier!r}; expected one of "
                f"{sorted(NAMED)}, a `Strategy` object or None. "
                f"Received: strategy={identifier!r}"
            )
        return NAMED[identifier]()
    raise TypeError(
        "Expected `strategy` to be a name, a `keras_incremental.strategies."
        f"Strategy` or None. Received: {identifier!r} of type "
        f"{type(identifier).__name__}"
    )


def serialize(strategy):
    """A JSON-able description of `strategy` that `deserialize` reads."""
    return {
        "name": strategy.name,
        "parts": [
            {"class": type(p).__name__, "config": p.get_config()}
            for p in strategy.parts
        ],
    }


def deserialize(config):
    """Rebuilds a strategy written by `serialize`.

    Each part is made by its constructor, whose checks refuse a config that
    no constructor call could have written (a crafted or damaged checkpoint:
    a NaN weight, a bool for a number, an argument the class does not take).

    Raises:
        ValueError: for a part that is not one of this package's strategies,
            or a value its constructor refuses (out of range, not finite).
        TypeError: for a value of the wrong type, or an unknown argument.
    """
    parts = []
    for part in config["parts"]:
        cls = PARTS.get(part["class"])
        if cls is None:
            raise ValueError(
                f"Cannot rebuild strategy part {part['class']!r}; expected "
                f"one of {sorted(PARTS)}. Pass it to "
                "`IncrementalModel.restore(path, strategy=...)`."
            )
        try:
            parts.append(cls(**part["config"]))
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(
                f"Cannot rebuild strategy part {part['class']!r} from its "
                f"config: {error}"
            ) from error
    if len(parts) == 1 and parts[0].name == config["name"]:
        return parts[0]
    return Combine(*parts, name=config["name"])


__all__ = [
    "Analytic",
    "AsymmetricLoss",
    "BalancedLoss",
    "Combine",
    "Distillation",
    "EWC",
    "LabelSmoothing",
    "LogitReplay",
    "NAMED",
    "NearestMeanOfExemplars",
    "Replay",
    "StageContext",
    "Strategy",
    "WeightAligning",
    "deserialize",
    "get",
    "serialize",
]
