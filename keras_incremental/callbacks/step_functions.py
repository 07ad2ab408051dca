"""The cache of a stage's compiled train and test functions."""

from keras_incremental import compat
from keras_incremental.models.growth import traced_variables


class StageFunctions:
    """The last stage's train and test functions, with what they were
    traced against: the next stage reuses them when that is unchanged,
    rather than paying for a retrace.

    Example:

    ```python
    functions = StageFunctions()
    functions.use(model, head, context, strategy, teacher)  # stage start
    functions.keep(model, head, context, strategy, teacher)  # stage end
    ```
    """

    def __init__(self):
        self.functions = None
        self.key = None

    @staticmethod
    def trace_key(model, head, context, strategy, teacher):
        """What the stage's train function is traced against."""
        return (
            strategy.trace_signature(context),
            head.free_width,
            compat.compile_identity(model),
            compat.backend_variable_ids(model.trainable_variables),
            traced_variables(model),
            compat.backend_variable_ids(teacher.weights) if teacher else (),
            # A spare capacity's mask is as wide as the allocation was when
            # traced (grown in place on TensorFlow, the same variables may
            # be wider since).
            tuple(head.kernel.shape) if head.capacity is not None else None,
        )

    def use(self, model, head, context, strategy, teacher):
        """Gives `model` the kept functions where they are still valid, and
        has them made anew otherwise."""
        key = self.trace_key(model, head, context, strategy, teacher)
        if self.functions is not None and key == self.key:
            if head.capacity is None:
                model.train_function, model.test_function = self.functions
            else:
                # The test function gives the outputs of `units` columns,
                # which it took as they were when traced.
                compat.remake_compiled_functions(model)
                model.train_function = self.functions[0]
            return
        self.functions = None
        compat.remake_compiled_functions(model)

    def keep(self, model, head, context, strategy, teacher):
        """Keeps the stage's functions (and what they were traced against,
        the metric variables the first step made included) for the next."""
        self.key = self.trace_key(model, head, context, strategy, teacher)
        self.functions = (model.train_function, model.test_function)
