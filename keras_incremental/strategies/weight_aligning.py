import numpy as np

from keras_incremental.strategies.strategy import Strategy


class WeightAligning(Strategy):
    """Weight aligning: after each stage, the new classes' head weights are
    scaled to the old classes' mean norm.

    Trained mostly on new classes, the head gives them larger weight norms,
    so predictions lean towards them. After the stage, the kernel columns
    (and biases) of the classes the stage added are multiplied by
    `mean ||w_old|| / mean ||w_new||`. Unlike the paper's bias-free head,
    the new classes' biases are scaled too, so that their logits scale
    alike.

    Example:

    ```python
    strategy = Combine(Replay(), Distillation(), WeightAligning())
    ```

    References:
        - [Zhao et al., 2020](https://arxiv.org/abs/1911.07053), Maintaining
          Discrimination and Fairness in Class Incremental Learning.
    """

    name = "wa"

    def end_stage(self, context):
        head, old = context.head, context.old_units
        if old == 0 or head.units <= old:
            return
        kernel = np.asarray(head.kernel.numpy())
        norms = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
        gamma = np.mean(norms[:old]) / max(np.mean(norms[old:]), 1e-12)
        kernel[..., old:] *= gamma
        head.kernel.assign(kernel)
        if head.use_bias:
            bias = np.asarray(head.bias.numpy())
            bias[old:] *= gamma
            head.bias.assign(bias)
