"""The teacher: a frozen copy of the model as the stage starts."""

from keras_incremental.callbacks import stage_loss
from keras_incremental.models.heads import find_head


class Teacher:
    """Keeps one frozen copy of the model for the whole run.

    The copy grows with the model and takes its weights at each stage, in
    place, so that a stage's train function that reads it can be reused; a
    new copy is made when the model's layout changed. It is never an
    attribute of the model (it would be tracked, saved, and on JAX purged).

    Args:
        head: The name of the head to grow, or `None` for the model's last
            `ExpandableDense`.

    Example:

    ```python
    teachers = Teacher(head=None)
    teacher = teachers.refresh(model)  # at each stage start
    ```
    """

    def __init__(self, head=None):
        self.head = head
        self.model = None

    def refresh(self, model):
        """The teacher for a stage of `model`: the model as it is now.

        Args:
            model: The model about to train a stage.

        Returns:
            The frozen copy (a `keras.Model`), whose head gives its masked
            columns in inference too.
        """
        teacher = self.model
        if teacher is not None:
            teacher_head = find_head(teacher, self.head)
            missing = find_head(model, self.head).units - teacher_head.units
            if missing >= 0:
                teacher_head.expand(missing)
            weights = model.get_weights()
            if [w.shape for w in weights] != [
                tuple(v.shape) for v in teacher.weights
            ]:
                teacher = None
            else:
                teacher.set_weights(weights)
        if teacher is None:
            teacher = stage_loss.frozen_copy(model)
            teacher_head = find_head(teacher, self.head)
            teacher_head.free_width = True
            teacher_head.masked_in_inference = True
        self.model = teacher
        return teacher
