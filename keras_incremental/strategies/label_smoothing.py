import keras

from keras_incremental.strategies.features import logits_of
from keras_incremental.strategies.strategy import Strategy


class LabelSmoothing(Strategy):
    """Label smoothing as a loss term: softer logits on few exemplars.

    Adds `epsilon * mean_k(-log softmax(z)_k)` to the loss: the
    cross-entropy against the uniform distribution over all output units,
    which is what label smoothing adds to the compiled loss (up to its
    `1 - epsilon` factor), whatever that loss and its label format are. It
    keeps the logits from growing without bound on the few replayed
    exemplars, so they overfit less, and gives the next stage's
    distillation softer targets.

    Args:
        epsilon: Weight of the uniform term, in [0, 1]. Defaults to `0.1`.

    Example:

    ```python
    strategy = Combine(Replay(), Distillation(), LabelSmoothing(0.2))
    ```

    References:
        - [Szegedy et al., 2016](https://arxiv.org/abs/1512.00567),
          Rethinking the Inception Architecture for Computer Vision (label
          smoothing).
        - [Müller et al., 2019](https://arxiv.org/abs/1906.02629), When Does
          Label Smoothing Help?
    """

    name = "label_smoothing"

    def __init__(self, epsilon=0.1):
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, (int, float))
            or not 0 <= epsilon <= 1
        ):
            raise ValueError(
                f"Expected `epsilon` in [0, 1]. Received: epsilon={epsilon!r}"
            )
        self.epsilon = float(epsilon)

    def loss(self, context, x, y, y_pred):
        if not self.epsilon:
            return None
        ops = keras.ops
        logits = ops.cast(logits_of(context.head, y_pred), "float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        return self.epsilon * ops.mean(-ops.mean(log_probs, axis=-1))

    def trace_signature(self, context):
        # Reads nothing that changes between stages.
        return ()

    def get_config(self):
        return {"epsilon": self.epsilon}
