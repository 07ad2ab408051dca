"""Views of a classifier that strategies share: features and logits."""

import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.layers.masking import mask_columns


def feature_extractor(model, head):
    """A model from `model`'s inputs to the input of its head layer.

    Raises:
        ValueError: when the model has no symbolic inputs (a subclassed
            model), so the head's input cannot be reached.
    """
    try:
        inputs = model.inputs
        inputs = inputs[0] if len(inputs) == 1 else inputs
        features = head.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            "Herding and nearest-mean prediction need the features that "
            "enter the head, so the model must be a Sequential or "
            f"Functional model with an `Input`. Received: {model!r} "
            f"({error})"
        ) from error
    return keras.Model(inputs, features)


def logits_of(head, outputs):
    """Logits from the model's outputs.

    After a softmax (the head's activation, or a `Softmax` or `Activation`
    layer after the head, as an adopted classifier may have), the logits the
    softmax was given where the outputs carry them (Keras keeps them on the
    softmax's output, as its cross-entropy does), else log-probabilities for
    a softmax head. The clipped logarithm has no gradient below 1e-7, and a
    confident model trained elsewhere has many probabilities there (a
    quarter of them on the training data of an adopted 15-epoch MLP), which
    label smoothing and distillation then cannot move.
    """
    cached = compat.softmax_logits(outputs)
    if cached is not None:
        return cached
    if head.activation is keras.activations.softmax:
        return keras.ops.log(keras.ops.clip(outputs, 1e-7, 1.0))
    return outputs


def masked_units(head, logits):
    """`logits` with the columns that are not units of `head` masked
    (`mask_columns`), in float32, and the mask (`None`: all are units).

    Logits read back from a softmax's probabilities (`logits_of`) are
    finite in the masked columns; masking them again keeps them out of any
    softmax.
    """
    logits = keras.ops.cast(logits, "float32")
    mask = unit_mask(head, logits)
    if mask is not None:
        logits = mask_columns(logits, mask)
    return logits, mask


def unit_mask(head, logits):
    """Which columns of `logits` are the head's units, or `None` for all.

    Inside a stage's functions a head with spare capacity gives all its
    columns, the inactive ones masked (`ExpandableDense`'s "Spare
    capacity"); a term over the columns must leave those out.
    """
    mask = None if head is None else head.output_mask()
    if mask is None or logits.shape[-1] != mask.shape[-1]:
        return None
    return mask


def outputs(model, x, batch_size=None):
    """The model's outputs on arrays, in eager batches.

    Calling the model directly skips tracing a predict function, which
    costs more than the whole prediction on evaluation-sized data; other
    inputs (datasets) go through `model.predict`.
    """
    if not isinstance(x, np.ndarray):
        return model.predict(x, batch_size=batch_size, verbose=0)
    size = batch_size or 1024
    bucket = keras.backend.backend() == "jax"
    results = []
    for start in range(0, max(len(x), 1), size):
        batch = x[start : start + size]
        rows = len(batch)
        if bucket and rows:
            # JAX compiles each op once per shape: batches padded to a
            # power of two (at most `size`) reuse a few shapes across calls
            # (evaluation sets of every size, stage after stage).
            padded = min(size, 1 << (rows - 1).bit_length())
            batch = np.concatenate(
                [
                    batch,
                    np.zeros((padded - rows,) + batch.shape[1:], batch.dtype),
                ]
            )
        result = keras.ops.convert_to_numpy(model(batch, training=False))
        results.append(result[:rows])
    return np.concatenate(results)
