"""A run continued from a stage checkpoint: what `IncrementalModel.restore`
reads, checks and warns about before the callback takes it."""

import dataclasses
import functools
import warnings

import keras

from keras_incremental import strategies
from keras_incremental.memory import ExemplarMemory
from keras_incremental.saving import checkpoint as checkpoints
from keras_incremental.saving.run_state import RunState


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """A checkpoint's run, checked, ready for an `IncrementalModel`.

    Attributes:
        model: The model, with its optimizer state.
        path: The checkpoint's path, as a string.
        settings: The constructor keywords it holds (the strategy to go on
            with, as an object).
        state: Its `RunState`.
        memory: Its `ExemplarMemory`, or `None`.
        arrays: The strategy's saved arrays.
        same_parts: Whether the strategy to go on with has the saved one's
            parts (then it takes `arrays`).
    """

    model: keras.Model
    path: str
    settings: dict
    state: RunState
    memory: ExemplarMemory
    arrays: dict
    same_parts: bool


def read_saved_run(path, strategy=None, freeze=None, evaluation=None):
    """Reads the checkpoint at `path` for `restore` (see there).

    Args:
        path: The checkpoint.
        strategy: The strategy to go on with, or `None` for the saved one.
        freeze: The `freeze` to go on with, or `None` for the saved one.
        evaluation: The evaluation data given to `restore`, if any (only
            whether it is given matters here).

    Returns:
        A `SavedRun`.

    Raises:
        ValueError: naming the file, the part and the problem, for a file
            that is not a valid checkpoint. Nothing is changed.
    """
    model, state, memory, arrays = checkpoints.read_checkpoint(
        path,
        ExemplarMemory,
        array_shapes=functools.partial(_saved_array_shapes, strategy),
    )
    path = checkpoints.check_checkpoint_path(path)
    settings = dict(state.settings)
    strategy, same_parts = _restored_strategy(
        path, settings["strategy"], strategy, bool(arrays)
    )
    settings["strategy"] = strategy
    if freeze is not None:
        settings["freeze"] = freeze
    elif state.freeze_callable:
        warnings.warn(
            f"The run saved in '{path}' froze layers with a callable, "
            "which a checkpoint cannot hold; the next stages train every "
            "layer unless you pass `freeze=` to `restore`.",
            stacklevel=3,
        )
    if evaluation is None and state.evaluation:
        warnings.warn(
            f"The run saved in '{path}' had `evaluation` data, which a "
            "checkpoint does not hold; pass `evaluation=` to `restore` to "
            "keep measuring accuracy (`metrics()` is empty otherwise).",
            stacklevel=3,
        )
    return SavedRun(model, path, settings, state, memory, arrays, same_parts)


def _saved_array_shapes(strategy, model, head, state):
    """The shapes declared for the saved arrays on `model` and `head`: by
    `strategy` (the one given to `restore`) when it has the saved one's
    parts, else by the saved strategy; `None` (the reader's default bound)
    when neither declares any or the saved one cannot be rebuilt (which
    `_restored_strategy` reports)."""
    try:
        saved = state.settings["strategy"]
        parts = [p["class"] for p in saved["parts"]]
        if strategy is not None:
            given = strategies.get(strategy)
            if [type(p).__name__ for p in given.parts] == parts:
                return given.state_shapes(model, head)
        return strategies.deserialize(saved).state_shapes(model, head)
    except (KeyError, TypeError, ValueError):
        return None


def _restored_strategy(path, saved, strategy, has_arrays):
    """The strategy a restored run goes on with, and whether it has the
    saved one's parts (then it takes the saved arrays)."""
    saved_parts = [p["class"] for p in saved["parts"]]
    if strategy is None:
        try:
            strategy = strategies.deserialize(saved)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Checkpoint '{path}' is not valid: its strategy cannot be "
                f"rebuilt ({error}); pass `strategy=` to `restore`."
            ) from error
    strategy = strategies.get(strategy)
    # What the saved strategy learned (EWC's importances) goes on with a
    # strategy of the same parts, whatever their settings.
    same_parts = [type(p).__name__ for p in strategy.parts] == saved_parts
    if has_arrays and not same_parts:
        warnings.warn(
            f"The strategy saved in '{path}' ({saved_parts}) learned "
            f"state that {strategy.name!r} cannot take; it is dropped.",
            stacklevel=4,
        )
    return strategy, same_parts
