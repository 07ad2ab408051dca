"""One stage's data made ready for `fit`: what `IncrementalModel.prepare`
does, with its inputs and outputs explicit."""

import numpy as np

from keras_incremental.data import stage_data


def prepare_stage(
    x, y, encoder, memory, strategy, spec, *, model_known, seed, stage
):
    """Learns the stage's classes in `encoder` and makes the data for `fit`.

    Args:
        x: The stage's inputs: NumPy arrays or a `tf.data.Dataset` of
            `(x, y)` elements.
        y: The class labels, or `None` with a dataset.
        encoder: The `LabelEncoder` to learn the new classes in (a copy:
            the caller keeps it only when this succeeds).
        memory: The run's `ExemplarMemory`.
        strategy: The run's `Strategy` (its `replay`, `needs_arrays`,
            `needs_logits` flags).
        spec: A function of no arguments giving the `TargetSpec` (label
            format and width of the compiled loss) once `encoder` has
            learned the stage's classes.
        model_known: Whether the run knows its model (then targets with
            stored logits are packed, for the stage's loss to unpack).
        seed: The run's seed.
        stage: The number of the stage being prepared.

    Returns:
        `(fit_data, prepared, packed)`: `(x, y)` for `fit` (`(dataset,
        None)` for a dataset), the `PreparedStage`, and whether the targets
        are packed as `(labels, logits, mask)`.

    Raises:
        ValueError, TypeError: for data `prepare` refuses (see there).
    """
    replay = strategy.replay
    if stage_data.is_dataset(x):
        if strategy.needs_arrays:
            raise ValueError(
                f"The strategy {strategy.name!r} needs the stage as "
                "NumPy arrays in `prepare` (to replay stored logits or "
                "estimate weight importances). Received a "
                "`tf.data.Dataset`; pass arrays or pick another strategy."
            )
        if y is not None:
            raise ValueError(
                "With a `tf.data.Dataset`, labels come from its (x, y) "
                "elements; expected `y=None`. Received a `y` as well."
            )
        element = x.element_spec[0]
        if replay:
            stage_data.check_samples(
                element.shape,
                element.dtype.as_numpy_dtype,
                memory,
                dataset=True,
            )
        prepared, stage_info = stage_data.prepare_dataset(
            x, encoder, memory, replay, spec, seed=seed + stage
        )
        return (prepared, None), stage_info, False
    x, labels = stage_data.check_arrays(x, y)
    # Targets packed with stored logits need the stage's loss to unpack
    # them, and `fit` may build its loss on them first (JAX, PyTorch):
    # packed only when the model is known, so that it reads them, or when
    # there are logits to replay.
    packed = strategy.needs_logits and (
        model_known or memory.logits_ is not None
    )
    if replay:
        stage_data.check_samples(x.shape[1:], x.dtype, memory)
    fit_data, stage_info = stage_data.prepare_arrays(
        x,
        labels,
        encoder,
        memory,
        replay,
        packed,
        spec,
        np.random.default_rng([seed, stage]),
    )
    return fit_data, stage_info, packed
