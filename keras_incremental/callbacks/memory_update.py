"""The exemplar memory's update at a stage end, and what it needs of the
model (features for herding, logits for logit replay)."""

import copy
import functools

from keras_incremental.data import stage_data
from keras_incremental.strategies.features import feature_extractor
from keras_incremental.strategies.features import outputs


def memory_functions(model, head, strategy):
    """What the memory needs of `model` under `strategy`.

    Args:
        model: The run's model, or `None` when it is not known yet.
        head: Its `ExpandableDense` (ignored without a model).
        strategy: The run's `Strategy`.

    Returns:
        `(embed, predict)`: functions `x -> features` (for herding) and
        `x -> logits` (for logit replay), each `None` when not needed.

    Raises:
        ValueError: when one is needed and there is no model.
    """
    herding = strategy.selection == "herding"
    if not herding and not strategy.needs_logits:
        return None, None
    if model is None:
        raise ValueError(
            f"The strategy {strategy.name!r} chooses or stores exemplars "
            "with the model's outputs, and there is no model yet; expected "
            "`model=` in `IncrementalModel` (or `adopt`)."
        )
    embed = predict = None
    if herding:
        embed = functools.partial(outputs, feature_extractor(model, head))
    if strategy.needs_logits:
        predict = functools.partial(outputs, model)
    return embed, predict


def updated_memory(memory, samples, encoder, strategy, model, head):
    """The memory after a stage's samples, updated on a copy: the run's own
    changes only when the stage is committed.

    Args:
        memory: The run's `ExemplarMemory` (not changed).
        samples: The stage's own samples (`PreparedStage.samples`).
        encoder: The run's `LabelEncoder` (for a dataset's labels).
        strategy: The run's `Strategy` (its selection rule).
        model: The run's model.
        head: Its `ExpandableDense`.

    Returns:
        The updated copy.
    """
    if stage_data.is_dataset(samples):
        samples = stage_data.dataset_arrays(samples, encoder)
    embed, predict = memory_functions(model, head, strategy)
    # `update` replaces the memory's arrays rather than writing into them:
    # a shallow copy keeps the run's own memory as it was, without a second
    # copy of the exemplars.
    updated = copy.copy(memory)
    updated.selection = strategy.selection or "random"
    updated.update(*samples, embed=embed, predict=predict)
    return updated
