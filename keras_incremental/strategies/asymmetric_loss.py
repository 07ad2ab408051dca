import keras

from keras_incremental.strategies.features import logits_of
from keras_incremental.strategies.features import masked_units
from keras_incremental.strategies.strategy import Strategy


class AsymmetricLoss(Strategy):
    """Asymmetric cross-entropy (ER-ACE): the stage's new samples compete
    only among the stage's new classes; exemplars among all classes.

    Trained with the usual cross-entropy, each new sample pushes every old
    class's logit down, and the few exemplars cannot hold them up: the head
    drifts towards the new classes. Here the compiled loss is kept for the
    exemplars (labels of earlier classes), and the new samples get a
    cross-entropy over the new classes' logits only, so learning the new
    classes does not unlearn the old ones. The first stage is trained as
    usual.

    Example:

    ```python
    strategy = Combine(Replay(), AsymmetricLoss(), Distillation())
    ```

    References:
        - [Caccia et al., 2022](https://arxiv.org/abs/2104.05025), New
          Insights on Reducing Abrupt Representation Change in Online
          Continual Learning (ER-ACE).
        - [Ahn et al., 2021](https://arxiv.org/abs/2011.13580), SS-IL:
          Separated Softmax for Incremental Learning.
    """

    name = "ace"

    def weigh(self, context, labels, sample_weight):
        if context.old_units == 0:
            return sample_weight
        old = keras.ops.cast(
            _indices(labels, context.head.units) < context.old_units,
            "float32",
        )
        if sample_weight is None:
            return old
        return old * keras.ops.cast(sample_weight, "float32")

    def loss(self, context, x, y, y_pred):
        old_units = context.old_units
        if old_units == 0:
            return None
        ops = keras.ops
        labels = y[0] if isinstance(y, tuple) else y
        indices = _indices(labels, context.head.units)
        new = ops.cast(indices >= old_units, "float32")
        # Spare columns of the head (masked) stay out of the softmax.
        logits, _ = masked_units(context.head, logits_of(context.head, y_pred))
        new_logits = logits[:, old_units:]
        target = ops.maximum(indices - old_units, 0)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            target, new_logits, from_logits=True
        )
        # Averaged over the whole batch, as the compiled loss is, so that
        # the two parts add up to one cross-entropy per sample.
        batch = ops.cast(ops.shape(logits)[0], "float32")
        return ops.sum(cross_entropy * new) / batch


def _indices(labels, units):
    """Class indices from sparse labels or one-hot targets."""
    ops = keras.ops
    if len(labels.shape) > 1 and labels.shape[-1] == units and units > 1:
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    return ops.cast(ops.reshape(labels, (-1,)), "int32")
