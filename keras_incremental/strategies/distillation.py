import keras

from keras_incremental.layers.masking import mask_columns
from keras_incremental.strategies.features import logits_of
from keras_incremental.strategies.features import masked_units
from keras_incremental.strategies.strategy import Strategy
from keras_incremental.utils.checks import check_number


class Distillation(Strategy):
    """Learning without Forgetting: the old classes' logits are distilled
    from the previous stage's model.

    Adds `weight * T**2 * KL(softmax(t / T) || softmax(s / T))` to the loss,
    where `t` are the teacher's logits and `s` the model's logits of the
    classes of earlier stages, through `keras.distillation.LogitsDistillation`.
    The teacher is a frozen copy of the model as it ended the previous stage,
    kept outside the model (never saved with it; on JAX its weights travel
    through the stage's compiled step as state, see `stage_variables`).

    Args:
        temperature: Softmax temperature, > 0. Defaults to `2.0`.
        weight: Weight of the distillation term, >= 0. Defaults to `1.0`.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(strategy=Distillation())
    ```

    References:
        - [Li & Hoiem, 2016](https://arxiv.org/abs/1606.09282), Learning
          without Forgetting.
        - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531), Distilling
          the Knowledge in a Neural Network.
    """

    name = "lwf"
    needs_teacher = True

    def __init__(self, temperature=2.0, weight=1.0):
        self.temperature = check_number(
            temperature, "temperature", minimum=0, include_minimum=False
        )
        self.weight = check_number(weight, "weight", minimum=0)
        # The loss as an object: given the default string, Keras 3.15 applies
        # `kl_divergence` to the scaled logits themselves rather than to
        # their softmax, which is not a divergence (and can go negative).
        self._distillation = keras.distillation.LogitsDistillation(
            temperature=self.temperature, loss=keras.losses.KLDivergence()
        )

    def loss(self, context, x, y, y_pred):
        if context.teacher is None:
            return None
        ops = keras.ops
        head = context.head
        teacher = logits_of(head, context.teacher(x, training=False))
        teacher, mask = masked_units(context.teacher_head, teacher)
        student = ops.cast(logits_of(head, y_pred), "float32")
        if mask is not None:
            # Heads with spare capacity give all their columns, inactive
            # ones masked (in float32: no overflow once divided by the
            # temperature): the student's are masked where the teacher's
            # are, so that both softmaxes cover the teacher's units only.
            student = mask_columns(student[..., : mask.shape[-1]], mask)
        else:
            # The teacher's width, read at run time: the same trace serves
            # every later stage, with the teacher grown in place.
            student = student[..., : ops.shape(teacher)[-1]]
        term = self._distillation.compute_loss(
            ops.stop_gradient(teacher), student
        )
        return self.weight * term

    def trace_signature(self, context):
        return (context.teacher is None,)

    def get_config(self):
        return {"temperature": self.temperature, "weight": self.weight}
