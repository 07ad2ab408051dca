import keras
import numpy as np
from keras import initializers
from keras import ops

from keras_incremental import compat
from keras_incremental.checks import check_unit_count
from keras_incremental.layers.new_units import new_units_value


@keras.saving.register_keras_serializable(package="keras_incremental")
class ExpandableDense(keras.layers.Dense):
    """A `Dense` layer whose number of output units can grow in place.

    It takes the arguments of `keras.layers.Dense` and computes the same
    outputs for the same weights, on inputs of any rank. Two things differ:
    `units` may be 0, so that a classifier head can start before any class is
    known, and `expand(n)` adds `n` output units to the built layer without
    rebuilding the model. The existing kernel and bias columns keep their
    values to the bit and the variables keep their paths; the new columns
    come from the layer's initializers.

    `expand` changes the layer only. To grow a compiled model, so that its
    optimizer state and compiled functions follow, use
    `keras_incremental.expand(model, n)`.

    Args:
        units: Non-negative integer, dimensionality of the output space.
            0 gives outputs of shape `(..., 0)`.
        activation: Activation function to use. Defaults to `None` (linear).
        use_bias: Boolean, whether the layer uses a bias vector.
            Defaults to `True`.
        kernel_initializer: Initializer for the `kernel` weights matrix, also
            used for the columns that `expand` adds.
            Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer for the bias vector, also used for the
            entries that `expand` adds. Defaults to `"zeros"`.
        kernel_regularizer: Regularizer function applied to the `kernel`.
            Defaults to `None`.
        bias_regularizer: Regularizer function applied to the bias vector.
            Defaults to `None`.
        activity_regularizer: Regularizer function applied to the output.
            Defaults to `None`.
        kernel_constraint: Constraint function applied to the `kernel`.
            Defaults to `None`.
        bias_constraint: Constraint function applied to the bias vector.
            Defaults to `None`.
        **kwargs: Any other argument of `keras.layers.Dense`, such as
            `lora_rank`, `name` or `dtype`.

    Input shape:
        N-D tensor with shape `(batch_size, ..., input_dim)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., units)`.

    Example:

    ```python
    head = keras_incremental.ExpandableDense(3, name="head")
    model = keras.Sequential([keras.Input((8,)), head])
    before = model(x)                  # shape (batch, 3)
    head.expand(2)
    after = model(x)                   # shape (batch, 5)
    # after[:, :3] equals before, to the bit. On a compiled model, use
    # `keras_incremental.expand(model, 2)`: it also grows the optimizer
    # state and remakes `predict`'s cached function.
    ```
    """

    def __init__(self, units, **kwargs):
        units = check_unit_count(units, "units", 0)
        # `Dense` accepts only positive units; give it a placeholder and set
        # the real count right after.
        super().__init__(max(units, 1), **kwargs)
        self.units = units
        # Whether traced functions see the output width as free. A function
        # traced with the width free stays valid when the head grows in
        # place (no retrace); one traced with it stated must be remade.
        # `IncrementalModel` frees it for the functions of its stages, which
        # it keeps from stage to stage. Stated by default: some metrics
        # (`F1Score`) size themselves from it inside the first traced step.
        self._free_width = False
        # The width the head will have once the stage being prepared starts
        # (`IncrementalModel.prepare` announces it); see `_placeholder`.
        self._next_units = 0

    def build(self, input_shape):
        super().build(input_shape)
        if self.quantization_mode is None:
            # Lets `expand` grow the kernel and bias in place, so that train
            # and predict functions traced before a growth stay valid.
            for variable in (self._kernel, self.bias):
                if variable is not None:
                    compat.make_growable(variable)

    def call(self, inputs, training=None):
        if compat.in_shape_inference():
            width = max(self.units, self._next_units)
            if width != self.units or width == 0:
                return self._placeholder(inputs, width)
        if (
            self.units == 0
            and self._free_width
            and compat.growable(self._kernel)
        ):
            # A trace that must also serve once the layer has units (a
            # teacher's head at the first stage): decided at run time.
            return compat.guarded_product(
                lambda: super(ExpandableDense, self).call(
                    inputs, training=training
                ),
                inputs,
                self._kernel,
                self.compute_dtype,
            )
        if self.units == 0:
            # TensorFlow's oneDNN matmul aborts the process on a zero-width
            # product; an empty output needs no arithmetic.
            empty = ops.zeros_like(inputs[..., :0])
            return ops.cast(empty, self.compute_dtype)
        outputs = super().call(inputs, training=training)
        return compat.state_width(outputs, self.units, self._free_width)

    def _placeholder(self, inputs, width):
        """Shape inference's stand-in for the outputs of a head about to
        grow to `width` units.

        `fit` on JAX and PyTorch (and on TensorFlow under a distribution
        strategy) builds the compiled loss and metrics on the model's
        symbolic outputs before any callback can grow the head: they must
        see the width the stage's targets have (one-hot ones are checked
        against it), and `argmax` over an empty axis cannot be traced.
        Nothing computed here is ever run, and the model's declared output
        shape (`compute_output_shape`) keeps `units`. With no width
        announced, two units: Keras reads a single one as a binary
        classifier when it picks the kind of `"accuracy"` and
        cross-entropy.
        """
        if width == 0:
            width = 2
        column = ops.zeros_like(inputs[..., :1])
        return ops.cast(ops.repeat(column, width, axis=-1), self.compute_dtype)

    def quantize(self, mode=None, type_check=True, config=None):
        # `Dense.quantize` refuses subclasses because their `call` may differ;
        # this one computes what `Dense` computes once it has units.
        if type_check and type(self) is not ExpandableDense:
            raise self._not_implemented_error(self.quantize)
        super().quantize(mode, type_check=False, config=config)

    def expand(self, n, kernel_initializer=None, bias_initializer=None):
        """Adds `n` output units to the layer, in place.

        The kernel and bias take the new width with their leading columns
        unchanged, and keep their names and paths. On TensorFlow they grow in
        place (the same variables, so functions traced before stay valid);
        on other backends they are replaced by new variables. On an unbuilt
        layer only `units` changes.

        Args:
            n: Non-negative integer, the number of units to add.
            kernel_initializer: Optional initializer for the new kernel
                columns. Defaults to the layer's `kernel_initializer`.
            bias_initializer: Optional initializer for the new bias entries.
                Defaults to the layer's `bias_initializer`.

        Returns:
            A list of `(old_variable, new_variable)` pairs, for the code that
            must follow the change (an optimizer's slots, for instance): the
            same object twice for a variable grown in place; empty when
            nothing changed.
        """
        n = check_unit_count(n, "n", 0)
        self.check_expandable()
        kernel_initializer = initializers.get(
            kernel_initializer or self.kernel_initializer
        )
        bias_initializer = initializers.get(
            bias_initializer or self.bias_initializer
        )
        if n == 0:
            return []
        if not self.built:
            self.units += n
            return []

        units = self.units + n
        old_kernel = self._kernel
        old_bias = self.bias
        # Growth runs eagerly, once per stage; NumPy keeps it to a handful of
        # backend calls, which is what its cost is made of.
        new_kernel_value = _grown_value(
            old_kernel, kernel_initializer, self.units, units
        )
        if old_bias is not None:
            new_bias_value = _grown_value(
                old_bias, bias_initializer, self.units, units
            )

        if all(
            compat.growable(v) for v in (old_kernel, old_bias) if v is not None
        ):
            compat.grow_variable(old_kernel, new_kernel_value)
            pairs = [(old_kernel, old_kernel)]
            if old_bias is not None:
                compat.grow_variable(old_bias, new_bias_value)
                pairs.append((old_bias, old_bias))
            self.units = units
            return pairs
        with (
            compat.variable_scope_of(old_kernel),
            compat.unlocked_tracker(self),
        ):
            new_kernel = self._replace_weight(
                old_kernel,
                new_kernel_value,
                self.kernel_regularizer,
                self.kernel_constraint,
            )
            self._kernel = new_kernel
            pairs = [(old_kernel, new_kernel)]
            if old_bias is not None:
                new_bias = self._replace_weight(
                    old_bias,
                    new_bias_value,
                    self.bias_regularizer,
                    self.bias_constraint,
                )
                self.bias = new_bias
                pairs.append((old_bias, new_bias))
        self.units = units
        return pairs

    def check_expandable(self):
        """Raises if the layer is in a state that `expand` cannot grow.

        Raises:
            ValueError: for a quantized layer or one with LoRA enabled.
        """
        if self.quantization_mode is not None:
            raise ValueError(
                f"Layer '{self.name}' is quantized "
                f"(quantization_mode='{self.quantization_mode}'); expected an "
                "unquantized layer. Grow the layer first, then quantize it."
            )
        if self.lora_enabled:
            raise ValueError(
                f"Layer '{self.name}' has LoRA enabled (lora_rank="
                f"{self.lora_rank}); expected a layer without LoRA. Grow the "
                "layer before calling `enable_lora`."
            )

    def _replace_weight(self, old, value, regularizer, constraint):
        name = old.name
        trainable = old.trainable
        self._tracker.untrack(old)
        return self.add_weight(
            name=name,
            shape=value.shape,
            initializer=lambda shape, dtype=None: value,
            dtype=old.dtype,
            trainable=trainable,
            regularizer=regularizer,
            constraint=constraint,
        )


def _grown_value(variable, initializer, units, grown_units):
    """`variable`'s value with new units from `initializer` appended."""
    old = compat.variable_numpy(variable)
    shape = old.shape[:-1] + (grown_units,)
    value = np.empty(shape, dtype=old.dtype)
    value[..., :units] = old
    value[..., units:] = new_units_value(
        initializer, shape, units, variable.dtype
    )
    return value
