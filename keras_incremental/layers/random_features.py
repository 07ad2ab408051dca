"""`RandomFeatures`: a fixed random projection and an activation."""

import keras
import numpy as np
from keras import ops

from keras_incremental.utils.checks import check_integer
from keras_incremental.utils.checks import check_number


@keras.saving.register_keras_serializable(package="keras_incremental")
class RandomFeatures(keras.layers.Layer):
    """A fixed random projection followed by an activation.

    `outputs = activation(inputs @ kernel + bias)` with a kernel drawn from
    `N(0, kernel_scale**2 / input_dim)` and a bias from
    `N(0, bias_scale**2)`, both fixed: the layer has no trainable weights.
    Placed before a linear head, it makes a raw-input or small-feature model
    strong under a closed-form (ridge) head such as
    `strategy="analytic"`: a linear model on wide random ReLU features
    approximates a kernel machine on the inputs.

    The weights are drawn with NumPy from `seed`, so the same seed gives
    the same layer on every backend. They are saved with the model like any
    layer's weights (a `.keras` file, a checkpoint, a serving export), so a
    loaded model computes what the saved one did.

    Args:
        units: Positive integer, the number of features (the width `M`).
        activation: Activation function applied to the projection.
            Defaults to `"relu"`.
        kernel_scale: Positive float, the standard deviation of the
            kernel's entries times `sqrt(input_dim)`. Defaults to `1.0`.
        bias_scale: Non-negative float, the standard deviation of the
            bias's entries (`0` for no bias). Defaults to `0.1`.
        seed: Non-negative integer seeding the draw, or `None` for one drawn
            from NumPy's global generator (which
            `keras.utils.set_random_seed` seeds) when the layer is made.
            Defaults to `None`.
        **kwargs: Base layer arguments, such as `name` or `dtype`.

    Input shape:
        N-D tensor with shape `(batch_size, ..., input_dim)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., units)`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras_incremental.layers.RandomFeatures(1024, seed=0),
        keras_incremental.ExpandableDense(0),
    ])
    ```
    """

    def __init__(
        self,
        units,
        activation="relu",
        kernel_scale=1.0,
        bias_scale=0.1,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.units = check_integer(units, "units", minimum=1)
        self.activation = keras.activations.get(activation)
        self.kernel_scale = check_number(
            kernel_scale,
            "kernel_scale",
            minimum=0.0,
            include_minimum=False,
        )
        self.bias_scale = check_number(bias_scale, "bias_scale", minimum=0.0)
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self.seed = check_integer(seed, "seed", minimum=0)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "`RandomFeatures` needs a known last input dimension; "
                f"received an input of shape {tuple(input_shape)}."
            )
        rng = np.random.default_rng(self.seed)
        kernel = rng.normal(
            scale=self.kernel_scale / np.sqrt(input_dim),
            size=(input_dim, self.units),
        )
        bias = rng.normal(scale=self.bias_scale, size=(self.units,))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer="zeros",
            trainable=False,
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(self.units,),
            initializer="zeros",
            trainable=False,
        )
        # Drawn with NumPy, not a backend's generator: the same seed gives
        # the same layer on every backend.
        self.kernel.assign(kernel.astype(self.kernel.dtype))
        self.bias.assign(bias.astype(self.bias.dtype))
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_dim}
        )

    def call(self, inputs):
        outputs = ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))
        outputs = ops.add(outputs, ops.cast(self.bias, inputs.dtype))
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_scale": self.kernel_scale,
            "bias_scale": self.bias_scale,
            "seed": self.seed,
        }
        return {**base_config, **config}
