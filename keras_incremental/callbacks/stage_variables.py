"""Variables a stage's compiled step reads that the model does not own.

Keras's JAX trainer compiles a step that takes the model's, the optimizer's
and the metrics' variables as arguments, and takes any other variable the
step reads (the teacher's weights in distillation, a strategy's class
weights) as a constant of the compiled program. A step kept from one stage
for the next would then still read the old stage's values; made anew, it is
compiled anew. `carry` passes such variables through the step as state, the
public way Keras passes a metric's variables: as the variables of a metric
of the model that does nothing else.
"""

import keras

from keras_incremental import compat

ATTRIBUTE = "_keras_incremental_stage_variables"


class StageVariables(keras.metrics.Metric):
    """A metric that only carries `variables` through the compiled steps.

    It has no result (nothing is added to the logs), and neither
    `update_state` nor `reset_state` (called by `fit` at each epoch) touches
    the variables.

    Args:
        variables: The `keras.Variable`s to carry.

    Example:

    ```python
    carrier = StageVariables(teacher.weights)
    ```
    """

    def __init__(self, variables):
        super().__init__(name="keras_incremental_stage_variables")
        self._carried = tuple(variables)

    @property
    def variables(self):
        return list(self._carried)

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def carry(model, variables):
    """Has `model`'s compiled steps take `variables` as state (on JAX).

    Replaces what an earlier `carry` put on the model. On other backends
    nothing is needed: TensorFlow's traced functions read variables when
    they run, and PyTorch's steps are not compiled.

    Args:
        model: The model being trained.
        variables: `keras.Variable`s that its step reads but does not own.
    """
    drop(model)
    variables = list(variables)
    if keras.backend.backend() != "jax" or not variables:
        return
    # Tracked as Keras tracks a model's attributes, also on a built model,
    # whose tracker is locked.
    with compat.unlocked_tracker(model):
        setattr(model, ATTRIBUTE, StageVariables(variables))


def drop(model):
    """Takes back what `carry` put on `model`, if anything."""
    compat.detach_tracked(model, ATTRIBUTE)
