import keras
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
        units = head.units  # Past them, a head's spare capacity.
        kernel = np.array(keras.ops.convert_to_numpy(head.kernel))
        norms = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
        gamma = np.mean(norms[:old]) / max(np.mean(norms[old:units]), 1e-12)
        kernel[..., old:units] *= gamma
        head.kernel.assign(kernel)
        if head.use_bias:
            bias = np.array(keras.ops.convert_to_numpy(head.bias))
            bias[old:units] *= gamma
            head.bias.assign(bias)
