"""The data path of a stage: class labels in, data for `model.fit` out.

`IncrementalModel` keeps the stage lifecycle; everything that reads a
stage's samples and labels is here, as functions with explicit inputs and
outputs: `prepare_arrays` and `prepare_dataset` (a stage's data for `fit`),
`encode` (labels for `validation_data` and `evaluate`), `class_weight`,
`check_remember` (samples for the memory), and `evaluation_indices`. Every
one of them reads labels through `normalize_labels`.
"""

import dataclasses
import math
import numbers
import sys

import numpy as np

from keras_incremental.data.labels import labels_from_onehot
from keras_incremental.data.targets import encode_targets
from keras_incremental.utils.messages import preview


def is_dataset(value):
    """Whether `value` is a `tf.data.Dataset`, without importing TensorFlow
    (on JAX and PyTorch it is imported only when a dataset is used)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.data.Dataset)


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What the compiled loss expects: `"sparse"` or `"categorical"`
    labels, and the one-hot width (the head's units, or more)."""

    fmt: str
    width: int


@dataclasses.dataclass(frozen=True)
class PreparedStage:
    """What `prepare` hands to the stage it prepared.

    Attributes:
        samples: The stage's own samples: `(x, class_indices)` NumPy arrays,
            or the `tf.data.Dataset` as it was given (read again, as arrays,
            for the memory update at the end of the stage).
        labels: 1-D int64 class indices of the stage's own samples.
        replayed: Class indices of the exemplars mixed in, or `None`.
        known: How many classes the encoder knew before this `prepare`, so
            that a second `prepare` before `fit` can take back what the
            first one added.
    """

    samples: object
    labels: np.ndarray
    replayed: object
    known: int


def normalize_labels(y, argument="y"):
    """Class labels as a 1-D array: the one reader of `y` in the package.

    - A list or tuple becomes an object array (strings, bytes and ints kept
      as they are).
    - A column of shape `(n, 1)` (how `keras.datasets` ship labels) is the
      labels themselves.
    - A 2-D array of shape `(n, classes)` with `classes > 1` is one-hot: each
      row becomes the index of its 1.
    - TensorFlow tensors are read as NumPy arrays.

    Args:
        y: The labels.
        argument: The argument's name, for error messages. Defaults to
            `"y"`.

    Returns:
        A 1-D NumPy array, one label per sample.

    Raises:
        ValueError: for labels of more than 2 dimensions, or 2-D labels that
            are not one-hot.

    Example:

    >>> normalize_labels(np.array([[3], [1]]))
    array([3, 1])
    >>> normalize_labels([[0, 1], [1, 0]])
    array([1, 0])
    """
    if isinstance(y, (list, tuple)) and not any(
        isinstance(item, (list, tuple, np.ndarray)) for item in y
    ):
        # Kept as Python values: 1 and "1" must not become one string.
        labels = np.empty(len(y), dtype=object)
        labels[:] = list(y)
    else:
        labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[-1] == 1:
        return labels.reshape(-1)
    if labels.ndim == 2:
        return labels_from_onehot(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"Expected `{argument}` to hold one class label per sample: 1-D, "
            "a column of shape (n, 1), or one-hot of shape (n, classes). "
            f"Received: {argument} of shape {labels.shape}"
        )
    return labels


def text_labels(labels, encoder):
    """Labels read back from TensorFlow, where strings come as bytes: `str`
    again, unless the run's classes are bytes."""
    if encoder.kind == "bytes":
        return list(labels)
    return [
        label.decode("utf-8") if isinstance(label, bytes) else label
        for label in labels
    ]


def check_arrays(x, y):
    """A stage's arrays: `x` as an array of finite samples and its labels.

    Raises:
        ValueError: for no labels, no samples, lengths that differ or
            non-finite inputs.
        TypeError: for `x` that is not an array.
    """
    if y is None:
        raise ValueError(
            "Expected labels `y` with array inputs. Received: y=None"
        )
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as error:
        raise TypeError(
            f"Expected `x` to be an array of inputs ({error})."
        ) from error
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            "Received an empty stage; expected at least one sample. "
            f"Received: x.shape={x.shape}"
        )
    labels = normalize_labels(y)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(
            "Expected as many labels as samples. Received: "
            f"{x.shape[0]} samples in x and {labels.shape[0]} labels in y"
        )
    if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(
            f"Received {bad} NaN or infinite values in x; expected finite "
            "inputs. Clean or impute them before `prepare`."
        )
    return x, labels


def check_samples(shape, dtype, memory, dataset=False):
    """Samples must match the stored exemplars in shape and kind of dtype.

    Exemplars are stored in the dtype of the first stage; later stages of
    another floating dtype (float64 from scikit-learn, float32 from a
    pipeline) are cast to it when they meet. Samples of another kind
    (integers, strings) than the exemplars are refused.

    Raises:
        ValueError: for samples shaped unlike the exemplars, or of another
            kind of dtype.
    """
    x_old, _ = memory.samples()
    if x_old is None:
        return
    expected = tuple(x_old.shape[1:])
    received = tuple(shape)
    if dataset and len(received) == len(expected) + 1:
        received = received[1:]  # a batched dataset
    if len(received) != len(expected) or any(
        r is not None and r != e
        for r, e in zip(received, expected, strict=True)
    ):
        raise ValueError(
            "Expected samples shaped like the exemplars in memory, "
            f"{expected}. Received samples of shape {received}. "
            "Nothing was changed."
        )
    if _dtype_kind(dtype) != _dtype_kind(x_old.dtype):
        raise ValueError(
            "Expected samples of the same kind of dtype as the exemplars in "
            f"memory ({x_old.dtype}); floating dtypes are cast to it, other "
            f"kinds are not. Received samples of dtype {np.dtype(dtype)}. "
            "Convert them first. Nothing was changed."
        )


def _dtype_kind(dtype):
    kind = np.dtype(dtype).kind
    return "f" if kind in "fc" else ("i" if kind in "iub" else kind)


def prepare_arrays(x, y, encoder, memory, replay, logits, spec, rng):
    """A stage given as arrays, ready for `fit`.

    The encoder learns the stage's new classes; nothing else changes.

    Args:
        x: The stage's inputs, checked by `check_arrays`.
        y: Its 1-D labels, from `check_arrays`.
        encoder: The run's `LabelEncoder`.
        memory: The run's `ExemplarMemory`.
        replay: Whether the exemplars are mixed in.
        logits: Whether the stored logits go with them (logit replay):
            then the targets are `(labels, logits, mask)`.
        spec: A callable returning the `TargetSpec` once the encoder knows
            the stage's classes.
        rng: The `np.random.Generator` that shuffles stage and exemplars.

    Returns:
        `((x, targets), PreparedStage)`.
    """
    known = len(encoder)
    encoder.partial_fit(np.unique(y) if _sortable(y) else y)
    indices = encoder.transform(y)
    stage = (x, indices)
    target = spec()
    if logits:
        stored = np.zeros((len(indices), target.width), dtype="float32")
        mask = np.zeros_like(stored)
    x_old, y_old = memory.samples() if replay else (None, None)
    replayed = None
    if y_old is not None and len(y_old):
        replayed = y_old
        x = np.concatenate([x, x_old.astype(x.dtype)], axis=0)
        indices = np.concatenate([indices, y_old], axis=0)
        order = rng.permutation(len(indices))
        x, indices = x[order], indices[order]
        if logits:
            old_logits, old_mask = memory.logit_targets(target.width)
            stored = np.concatenate([stored, old_logits], axis=0)[order]
            mask = np.concatenate([mask, old_mask], axis=0)[order]
    targets = encode_targets(indices, target.fmt, target.width)
    if logits:
        targets = (targets, stored, mask)
    prepared = PreparedStage(stage, stage[1], replayed, known)
    return (x, targets), prepared


def prepare_dataset(dataset, encoder, memory, replay, spec, seed):
    """A stage given as a `tf.data.Dataset` of `(x, label)`, ready for `fit`.

    Labels are read once to learn the new classes, then encoded in the
    pipeline by a lookup table; exemplars are appended to each batch (or
    interleaved, unbatched).

    Returns:
        `(dataset, PreparedStage)`.
    """
    import tensorflow as tf

    batches = [
        normalize_labels(y).astype(object).reshape(-1)
        for y in dataset.map(lambda x, y: y).as_numpy_iterator()
    ]
    labels = np.concatenate(batches) if batches else np.zeros((0,))
    if labels.size == 0:
        raise ValueError(
            "Received an empty dataset; expected at least one element."
        )
    labels = np.asarray(text_labels(labels.tolist(), encoder))
    known = len(encoder)
    encoder.partial_fit(np.unique(labels) if _sortable(labels) else labels)
    classes = encoder.classes_
    keys = tf.constant(classes)
    if keys.dtype.is_integer:
        # TensorFlow has int64 -> int64 tables only, not int32 ones.
        keys = tf.cast(keys, tf.int64)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(len(classes), dtype=tf.int64)
        ),
        default_value=-1,
    )
    target = spec()
    key_dtype = keys.dtype
    label_spec = dataset.element_spec[1]
    one_hot = label_spec.shape.rank == 2 and label_spec.shape[-1] != 1
    column = label_spec.shape.rank == 2 and label_spec.shape[-1] == 1

    def encode_batch(x, y):
        if one_hot:  # batched one-hot rows: their column is the label
            y = tf.argmax(y, axis=-1)
        elif column:  # batched (n, 1) labels
            y = tf.reshape(y, (-1,))
        index = table.lookup(tf.cast(y, key_dtype))
        if target.fmt == "categorical":
            return x, tf.one_hot(index, target.width)
        return x, index

    prepared = dataset.map(encode_batch)
    x_old, y_old = memory.samples() if replay else (None, None)
    replayed = None
    if y_old is not None and len(y_old):
        replayed = y_old
        x_dtype = dataset.element_spec[0].dtype.as_numpy_dtype
        exemplars = tf.data.Dataset.from_tensor_slices(
            (
                x_old.astype(x_dtype),
                encode_targets(y_old, target.fmt, target.width),
            )
        ).shuffle(len(y_old), seed=seed)
        if dataset.element_spec[0].shape.rank == x_old.ndim:
            prepared = _append_replay(prepared, exemplars, len(batches))
        else:
            # Unbatched: the exemplars are interleaved at random, so that
            # the last steps of an epoch are not all old classes.
            prepared = tf.data.Dataset.sample_from_datasets(
                [prepared, exemplars],
                weights=[float(len(labels)), float(len(y_old))],
                seed=seed,
                stop_on_empty_dataset=False,
            ).apply(
                tf.data.experimental.assert_cardinality(
                    len(labels) + len(y_old)
                )
            )
    stage = PreparedStage(dataset, encoder.transform(labels), replayed, known)
    return prepared, stage


def stage_arrays(samples, encoder):
    """A stage's own samples (`PreparedStage.samples`) as `(x,
    class_indices)` NumPy arrays: a dataset read once more."""
    if is_dataset(samples):
        return dataset_arrays(samples, encoder)
    return samples


def dataset_arrays(dataset, encoder):
    """All `(x, class_indices)` of a dataset of `(x, label)` elements."""
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        if np.ndim(y) == 0:  # an unbatched element
            x, y = np.expand_dims(x, 0), np.reshape(y, (1,))
        labels = normalize_labels(y).astype(object).reshape(-1)
        xs.append(x)
        ys.append(encoder.transform(text_labels(labels.tolist(), encoder)))
    return np.concatenate(xs), np.concatenate(ys)


def encode(y, encoder, spec):
    """Class labels as the compiled loss's targets at the current width.

    Args:
        y: Class labels as `prepare` takes them (1-D, a column, or one-hot
            of the classes' indices).
        encoder: The run's `LabelEncoder`.
        spec: The `TargetSpec`.

    Returns:
        int64 class indices (sparse losses) or float32 one-hot rows of
        `spec.width` columns (categorical losses).

    Raises:
        ValueError: for a label of a class the run does not know.
    """
    labels = normalize_labels(y)
    if not len(encoder):
        raise ValueError(
            "No class is known yet; expected `prepare` (or `adopt`) to learn "
            "classes before `encode`. Received labels "
            f"{preview(labels.tolist())}"
        )
    indices = encoder.transform(text_labels(labels.tolist(), encoder))
    return encode_targets(indices, spec.fmt, spec.width)


def class_weight(weights, encoder):
    """A dict keyed by class name as the dict keyed by index that `fit` takes.

    Raises:
        TypeError: when `weights` is not a dict, or a weight not a number.
        ValueError: for an unknown class name or a negative or non-finite
            weight.
    """
    if not isinstance(weights, dict):
        raise TypeError(
            "Expected `weights` to be a dict mapping class names to weights, "
            f"e.g. {{'cat': 2.0}}. Received: weights={weights!r} of type "
            f"{type(weights).__name__}"
        )
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(
                f"Expected a number as the weight of class {name!r}. "
                f"Received: {weight!r} of type {type(weight).__name__}"
            )
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"Expected a finite weight >= 0 for class {name!r}. "
                f"Received: {weight!r}"
            )
    names = list(weights)
    indices = lookup(names, encoder)
    unknown = [name for name, i in zip(names, indices, strict=True) if i < 0]
    if unknown:
        raise ValueError(
            f"Received weights for {len(unknown)} class(es) the run does not "
            f"know: {preview(unknown)}; expected names among its "
            f"{len(encoder)} classes: {preview(encoder.classes_)}."
        )
    return {
        int(i): float(weights[name])
        for name, i in zip(names, indices, strict=True)
    }


def check_remember(x, y, encoder, memory, needs_memory=True):
    """Samples for `remember`: arrays of known classes, shaped like the
    memory's exemplars; returns `(x, class_indices)`.

    Args:
        needs_memory: Whether a memory is required (not when the strategy
            learns from the samples itself: `Strategy.remembers`).

    Raises:
        ValueError: without a memory (when one is needed), for an unknown
            class, or for the bad inputs `check_arrays` and `check_samples`
            refuse.
    """
    if needs_memory and not memory.memory_size:
        raise ValueError(
            "`remember` fills the exemplar memory, and this run keeps none; "
            "expected `memory_size` > 0. Received: memory_size=0. Pass "
            "`memory_size=...` to `IncrementalModel` (or `adopt`)."
        )
    x, labels = check_arrays(x, y)
    if memory.memory_size:
        check_samples(x.shape[1:], x.dtype, memory)
    labels = text_labels(labels.tolist(), encoder)
    indices = lookup(labels, encoder)
    unknown = [label for label, i in zip(labels, indices, strict=True) if i < 0]
    if unknown:
        raise ValueError(
            f"`remember` takes samples of classes already known; received "
            f"{len(unknown)} sample(s) of unknown classes: "
            f"{preview(sorted(set(unknown), key=repr))}. Known classes: "
            f"{preview(encoder.classes_)}. New classes are learned by "
            "`prepare` and `fit`; a class whose stage is not trained yet "
            "(after `prepare`, before `fit` ends) cannot be remembered."
        )
    return x, indices


def lookup(labels, encoder):
    """Class indices of `labels`, -1 for those the encoder does not know."""
    index = {name: i for i, name in enumerate(encoder.classes_)}
    result = np.full(len(labels), -1, dtype="int64")
    for position, label in enumerate(labels):
        if isinstance(label, np.generic):
            label = label.item()
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        try:
            result[position] = index.get(label, -1)
        except TypeError:  # unhashable: not a class name
            pass
    return result


def evaluation_indices(labels, encoder):
    """Class indices of evaluation labels, -1 for classes not seen yet."""
    labels = normalize_labels(labels, "evaluation labels")
    return lookup(text_labels(labels.tolist(), encoder), encoder)


def _append_replay(batches, replay, count):
    """Appends exemplars to each of the `count` batches of a stage.

    Every batch gets `ceil(exemplars / count)` of them, drawn in a new order
    each epoch, so each exemplar is replayed at least once an epoch and every
    step sees old classes as well as new ones (the replay batches of
    experience replay). Working batch by batch keeps the pipeline's cost to
    a few operations a step.
    """
    import tensorflow as tf

    size = len(replay)
    per_batch = -(-size // count)
    extra = replay.repeat().batch(per_batch)

    def append(new, old):
        return tuple(
            tf.concat([a, tf.cast(b, a.dtype)], axis=0)
            for a, b in zip(new, old, strict=True)
        )

    # Saying how many batches there are lets `fit` count its steps (with
    # `steps_per_execution` > 1 it would otherwise drop an epoch's last
    # partial execution).
    return (
        tf.data.Dataset.zip((batches, extra))
        .map(append)
        .apply(tf.data.experimental.assert_cardinality(count))
    )


def _sortable(labels):
    try:
        np.unique(labels)
    except TypeError:
        return False
    return True
