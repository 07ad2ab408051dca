import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.strategies.strategy import Strategy
from keras_incremental.utils.checks import check_number


class BalancedLoss(Strategy):
    """Class-balanced loss: each class weighs the same in the stage's loss.

    A stage has many samples of its new classes and few exemplars of each
    old one, so the head learns to favour the new classes. Each sample's
    loss is weighted by `n / (k * n_c)` (`n` samples of `k` classes in the
    stage's data and replayed exemplars, `n_c` of its class), raised to
    `power` (0 leaves the loss as it is, 1 balances fully).

    Args:
        power: Strength of the balancing, in [0, 1]. Defaults to `1.0`.

    Example:

    ```python
    strategy = Combine(Replay(), BalancedLoss())
    ```

    References:
        - [Cui et al., 2019](https://arxiv.org/abs/1901.05555),
          Class-Balanced Loss Based on Effective Number of Samples.
        - [Castro et al., 2018](https://arxiv.org/abs/1807.09536), End-to-End
          Incremental Learning (balanced training against the new-class
          bias).
    """

    name = "balanced"

    def __init__(self, power=1.0):
        self.power = check_number(power, "power", minimum=0, maximum=1)
        self._weights = None

    def begin_stage(self, context):
        if context.labels is None:
            self._weights = None
            return
        labels = [np.asarray(context.labels)]
        if context.replayed is not None:
            labels.append(np.asarray(context.replayed))
        labels = np.concatenate(labels)
        # One weight per column the step sees: a head with spare capacity
        # gives all of them.
        counts = np.bincount(labels, minlength=context.head.storage_width())
        present = counts > 0
        weights = np.zeros(counts.shape, dtype="float32")
        weights[present] = (
            labels.size / (present.sum() * counts[present])
        ) ** self.power
        # Held in a variable that keeps its shape (spare capacity) or grows
        # in place (TensorFlow), so that the stage's train function reads
        # this stage's weights and can serve the next one.
        if self._weights is not None and tuple(self._weights.shape) == (
            weights.shape
        ):
            self._weights.assign(weights)
        elif self._weights is None or not compat.grow_variable(
            self._weights, weights
        ):
            self._weights = keras.Variable(
                weights, trainable=False, name="class_weights"
            )
            compat.make_growable(self._weights)

    def weigh(self, context, labels, sample_weight):
        if self._weights is None:
            return sample_weight
        ops = keras.ops
        weights = ops.convert_to_tensor(self._weights)
        # One-hot rows (their width may be unknown in a trace that serves
        # several stages), or class indices of shape (batch,) or (batch, 1).
        if len(labels.shape) > 1 and labels.shape[-1] != 1:
            per_sample = ops.matmul(ops.cast(labels, "float32"), weights)
        else:
            flat = ops.reshape(ops.cast(labels, "int32"), (-1,))
            per_sample = ops.take(weights, flat)
        if sample_weight is None:
            return per_sample
        return per_sample * ops.cast(sample_weight, "float32")

    def stage_variables(self):
        return [] if self._weights is None else [self._weights]

    def trace_signature(self, context):
        if self._weights is None:
            return (None,)
        return compat.backend_variable_ids([self._weights])

    def get_config(self):
        return {"power": self.power}
