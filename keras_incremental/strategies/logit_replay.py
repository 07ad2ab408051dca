import keras

from keras_incremental.strategies.strategy import Strategy
from keras_incremental.utils.checks import check_number


class LogitReplay(Strategy):
    """Dark experience replay: exemplars replay their stored logits too.

    The memory keeps, with each exemplar, the logits the model gave it at
    the end of the stage it was chosen in. During later stages the loss adds
    `alpha` times the mean squared error between the model's logits and the
    stored ones, over the columns each exemplar had; the exemplars' labels
    are trained on as in `Replay` (DER++'s second term). `prepare` then
    returns `y = (labels, logits, mask)`, which the installed loss reads.

    Args:
        alpha: Weight of the logit term, >= 0. Defaults to `0.5`.

    Example:

    ```python
    strategy = Combine(Replay(), LogitReplay(alpha=0.5), name="der++")
    ```

    References:
        - [Buzzega et al., 2020](https://arxiv.org/abs/2004.07211), Dark
          Experience for General Continual Learning: a Strong, Simple
          Baseline.
    """

    name = "logit_replay"
    replay = True
    selection = None  # any: the exemplars' choice is Replay's
    needs_logits = True
    needs_arrays = True

    def __init__(self, alpha=0.5):
        self.alpha = check_number(alpha, "alpha", minimum=0)

    def loss(self, context, x, y, y_pred):
        if not isinstance(y, tuple):
            return None
        _, logits, mask = y
        ops = keras.ops
        # A head with spare capacity gives more columns than were stored.
        y_pred = ops.cast(y_pred, "float32")[..., : ops.shape(logits)[-1]]
        squared = ops.square(y_pred - ops.cast(logits, "float32"))
        mask = ops.cast(mask, "float32")
        total = ops.sum(squared * mask)
        return self.alpha * total / ops.maximum(ops.sum(mask), 1.0)

    def trace_signature(self, context):
        # `loss` reads only its inputs, the packed targets (wider each
        # stage, which the traced function, made with `reduce_retracing`,
        # takes after one retrace): one trace serves every stage. A retrace
        # each stage would also keep each stage's graph for good: Keras's
        # optimizer registers a custom gradient in every trace, which
        # TensorFlow never frees (about 1.4 MB a stage on a small MLP).
        return ()

    def get_config(self):
        return {"alpha": self.alpha}
