import keras
import numpy as np
from keras import initializers
from keras import ops

from keras_incremental import compat
from keras_incremental.layers.masking import mask_columns
from keras_incremental.layers.new_units import new_units_value
from keras_incremental.utils.checks import check_unit_count


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
        capacity: Optional integer >= `units`: the width the kernel and
            bias are allocated with, so that growing up to it changes no
            variable's shape (see "Spare capacity" below). `None` allocates
            exactly `units`. Defaults to `None`.
        **kwargs: Any other argument of `keras.layers.Dense`, such as
            `lora_rank`, `name` or `dtype`.

    Spare capacity:
        With `capacity`, the kernel and bias hold `capacity` columns; the
        first `units` are the layer's units and the rest are zeros that
        `expand` fills, doubling the allocation when it runs out. The layer
        computes what a `Dense` of `units` computes (to rounding: the
        product is wider): its outputs, `get_config()` (but for
        `capacity`), and the weights `model.save` writes have `units`
        columns. Inside the train and test functions of an
        `IncrementalModel` stage (where the head's width is *free*), it
        returns all `capacity` columns instead, the inactive ones at a large
        negative logit (before the activation), so that a softmax and a
        cross-entropy ignore them and receive no gradient through them. The
        compiled step then keeps its shapes when the head grows: JAX does
        not compile it again. A non-trainable `active_units` variable holds
        the count the step reads.

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

    def __init__(self, units, *, capacity=None, **kwargs):
        units = check_unit_count(units, "units", 0)
        if capacity is not None:
            capacity = check_unit_count(capacity, "capacity", max(units, 1))
        # `Dense` accepts only positive units; give it a placeholder and set
        # the real count right after.
        super().__init__(max(units, 1), **kwargs)
        self.units = units
        self.capacity = capacity
        self._active = None
        # A teacher's head gives its masked columns in inference too.
        self._masked_in_inference = False
        # Whether traced functions see the output width as free. A function
        # traced with the width free stays valid when the head grows in
        # place (no retrace); one traced with it stated must be remade.
        # `IncrementalModel` frees it for the functions of its stages, which
        # it keeps from stage to stage. Stated by default: some metrics
        # (`F1Score`) size themselves from it inside the first traced step.
        self._free_width = False
        # The width the head will have once the stage being prepared starts
        # (`announce_units`); see `_placeholder`.
        self._next_units = 0

    def build(self, input_shape):
        if self.capacity is not None:
            if self.lora_rank:
                raise ValueError(
                    f"Layer '{self.name}' has a `capacity` and a `lora_rank`; "
                    "expected one or the other: LoRA is not supported on a "
                    f"head with spare capacity. Received: capacity="
                    f"{self.capacity}, lora_rank={self.lora_rank}"
                )
            units, self.units = self.units, self.capacity
            try:
                super().build(input_shape)
            finally:
                self.units = units
            # The units drawn as a `Dense` of `units` draws them (fans of
            # its shape); the spare columns zero.
            for variable, initializer in (
                (compat.dense_kernel(self), self.kernel_initializer),
                (self.bias, self.bias_initializer),
            ):
                if variable is None:
                    continue
                value = np.zeros(variable.shape, dtype=variable.dtype)
                shape = tuple(variable.shape[:-1]) + (units,)
                value[..., :units] = new_units_value(
                    initializer, shape, 0, variable.dtype
                )
                variable.assign(value)
            self._active = self._active_units_weight()
        else:
            super().build(input_shape)
        if self.quantization_mode is None:
            # Lets `expand` grow the kernel and bias in place, so that train
            # and predict functions traced before a growth stay valid.
            for variable in (compat.dense_kernel(self), self.bias):
                if variable is not None:
                    compat.make_growable(variable)

    def call(self, inputs, training=None):
        if compat.in_shape_inference():
            width = max(self.units, self._next_units)
            if width != self.units or width == 0:
                return self._placeholder(inputs, width)
        if self._active is not None:
            return self._spare_capacity_call(inputs, training)
        if (
            self.units == 0
            and self._free_width
            and compat.growable(compat.dense_kernel(self))
        ):
            # A trace that must also serve once the layer has units (a
            # teacher's head at the first stage): decided at run time.
            return _guarded_product(
                lambda: super(ExpandableDense, self).call(
                    inputs, training=training
                ),
                inputs,
                compat.dense_kernel(self),
                self.compute_dtype,
            )
        if self.units == 0:
            # TensorFlow's oneDNN matmul aborts the process on a zero-width
            # product; an empty output needs no arithmetic.
            empty = ops.zeros_like(inputs[..., :0])
            return ops.cast(empty, self.compute_dtype)
        outputs = super().call(inputs, training=training)
        return compat.state_width(outputs, self.units, self._free_width)

    def _spare_capacity_call(self, inputs, training):
        """The outputs of a head with spare capacity (see the class doc)."""
        outputs = ops.matmul(inputs, compat.dense_kernel(self))
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self._free_width and (training or self._masked_in_inference):
            # All columns, the inactive ones masked: the shapes stay the same
            # as the head grows, and the mask is read at run time.
            outputs = mask_columns(outputs, self.output_mask())
        else:
            outputs = outputs[..., : self.units]
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def output_mask(self):
        """Which output columns are units, inside a stage's functions.

        Returns:
            A boolean tensor of shape `(capacity,)` for a head with spare
            capacity (read from the `active_units` variable, so a traced
            function reads it at run time), else `None`: then every column
            of the outputs is a unit.
        """
        if self._active is None:
            return None
        capacity = compat.dense_kernel(self).shape[-1]
        return ops.arange(capacity, dtype="int32") < ops.convert_to_tensor(
            self._active
        )

    def save_own_variables(self, store):
        if self._active is None:
            return super().save_own_variables(store)
        # The file holds what a `Dense` of `units` holds: the spare columns
        # are an allocation, not weights.
        kernel = compat.dense_kernel(self)
        store["0"] = compat.variable_numpy(kernel)[..., : self.units]
        if self.bias is not None:
            store["1"] = compat.variable_numpy(self.bias)[..., : self.units]

    def load_own_variables(self, store):
        if self._active is None:
            return super().load_own_variables(store)
        expected = 2 if self.bias is not None else 1
        if len(store.keys()) != expected:
            raise ValueError(
                f"Layer '{self.name}' expected {expected} variables (kernel"
                f"{' and bias' if expected == 2 else ''}) in the saved file, "
                f"each with {self.units} columns. Received "
                f"{len(store.keys())} variables. Load a file saved from a "
                "model of the same layout."
            )
        variables = [compat.dense_kernel(self), self.bias][:expected]
        for index, variable in enumerate(variables):
            saved = np.asarray(store[str(index)])
            width = tuple(variable.shape[:-1]) + (self.units,)
            if saved.shape != width:
                raise ValueError(
                    f"Layer '{self.name}' expected a saved '{variable.name}' "
                    f"of shape {width} ({self.units} units). Received shape "
                    f"{saved.shape}. Load a file saved from a model whose "
                    "head has as many units."
                )
            value = np.zeros(variable.shape, dtype=variable.dtype)
            value[..., : self.units] = saved
            variable.assign(value)
        self._active.assign(self.units)

    def get_config(self):
        config = super().get_config()
        if self.capacity is not None:
            config["capacity"] = self.capacity
        return config

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

    def enable_lora(self, *args, **kwargs):
        if self.capacity is not None:
            raise ValueError(
                f"Layer '{self.name}' has spare capacity (capacity="
                f"{self.capacity}); expected a head without it for LoRA. "
                "Build the head without `capacity` (`IncrementalModel("
                "capacity=None)`) to use LoRA."
            )
        return super().enable_lora(*args, **kwargs)

    def quantize(self, mode=None, type_check=True, config=None):
        # `Dense.quantize` refuses subclasses because their `call` may differ;
        # this one computes what `Dense` computes once it has units.
        if self.capacity is not None:
            raise ValueError(
                f"Layer '{self.name}' has spare capacity (capacity="
                f"{self.capacity}); expected a head without it to quantize. "
                "Quantize a model saved and loaded without `capacity`."
            )
        if type_check and type(self) is not ExpandableDense:
            raise compat.not_implemented_error(self, self.quantize)
        super().quantize(mode, type_check=False, config=config)

    def expand(self, n, kernel_initializer=None, bias_initializer=None):
        """Adds `n` output units to the layer, in place.

        The kernel and bias take the new width with their leading columns
        unchanged, and keep their names and paths. Within a spare capacity
        they keep their shapes and take the new columns' values, on every
        backend. Otherwise, on TensorFlow they grow in place (the same
        variables, so functions traced before stay valid); on other backends
        they are replaced by new variables (the allocation doubled when it
        has a capacity). On an unbuilt layer only `units` changes.

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
        if not self.built:
            self.units += n
            if self.capacity is not None:
                self.capacity = self.storage_width(self.units)
            return []
        old_kernel = compat.dense_kernel(self)
        if n == 0 and old_kernel.shape[-1] == self.storage_width():
            return []

        units = self.units + n
        width = self.storage_width(units)
        old_bias = self.bias
        # Growth runs eagerly, once per stage; NumPy keeps it to a handful of
        # backend calls, which is what its cost is made of.
        new_kernel_value = _grown_value(
            old_kernel, kernel_initializer, self.units, units, width
        )
        new_bias_value = None
        if old_bias is not None:
            new_bias_value = _grown_value(
                old_bias, bias_initializer, self.units, units, width
            )
        variables = [v for v in (old_kernel, old_bias) if v is not None]
        values = [new_kernel_value, new_bias_value][: len(variables)]

        if all(compat.growable(v) for v in variables):
            for variable, value in zip(variables, values, strict=True):
                compat.grow_variable(variable, value)
            pairs = [(v, v) for v in variables]
        elif all(
            tuple(v.shape) == value.shape
            for v, value in zip(variables, values, strict=True)
        ):
            # Within the spare capacity: the same variables, new values.
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
            pairs = [(v, v) for v in variables]
        else:
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
                compat.set_dense_kernel(self, new_kernel)
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
        if self._active is not None:
            self.capacity = width
            self._active.assign(units)
        return pairs

    def reserve(self, capacity):
        """Asks for spare capacity on an unbuilt layer: room for at least
        `capacity` units when it is built.

        A built layer's variables and its optimizer's slots must follow:
        use `keras_incremental.expand(model, 0, capacity=...)` there.

        Args:
            capacity: Positive integer.

        Raises:
            ValueError: on a built layer.
        """
        capacity = check_unit_count(capacity, "capacity", 1)
        if self.built:
            raise ValueError(
                f"Layer '{self.name}' is built; expected an unbuilt layer for "
                "`reserve`, which only sets the width to allocate. Received "
                f"capacity={capacity}. Use `keras_incremental.expand(model, 0, "
                f"capacity={capacity})` on its model, which also carries the "
                "optimizer's state over."
            )
        self.capacity = max(capacity, self.units, self.capacity or 0)

    def allocate(self, capacity):
        """Sets the spare capacity of a built layer, ahead of the growth
        that allocates it.

        The layer's `capacity` becomes at least `capacity` (and its
        `units`), and a head without spare capacity gets its `active_units`
        variable; the kernel and bias keep their shapes until the next
        growth reallocates them. `keras_incremental.expand(model, n,
        capacity=...)` calls it before growing, and `release_allocation` if
        the growth fails. On an unbuilt layer, use `reserve`.

        Args:
            capacity: Positive integer, the number of units to make room
                for. A capacity the layer already has changes nothing.

        Returns:
            A token for `release_allocation`, which puts the layer's
            capacity back as it was before this call.

        Raises:
            TypeError: when `capacity` is not an integer.
            ValueError: when `capacity` is below 1, or the layer is not
                built, quantized or has LoRA enabled.
        """
        capacity = check_unit_count(capacity, "capacity", 1)
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built; expected a built layer "
                "for `allocate`. Received: capacity="
                f"{capacity}. Use `reserve(capacity)` on an unbuilt layer."
            )
        self.check_expandable()
        token = _Allocation(self, self.capacity, self._active)
        if self.capacity is not None and capacity <= self.capacity:
            return token
        if self._active is None:
            with (
                compat.variable_scope_of(compat.dense_kernel(self)),
                compat.unlocked_tracker(self),
            ):
                self._active = self._active_units_weight()
        self.capacity = max(capacity, self.units)
        return token

    def _active_units_weight(self):
        """The variable that masked outputs read the unit count from."""
        return self.add_weight(
            shape=(),
            initializer=initializers.Constant(self.units),
            dtype="int32",
            trainable=False,
            name="active_units",
        )

    def release_allocation(self, token):
        """Takes back an `allocate` call (after a growth that failed).

        The layer's `capacity` is put back as it was before the call, and
        an `active_units` variable that the call made is untracked.

        Args:
            token: What `allocate` returned on this layer.

        Raises:
            TypeError: when `token` is not a token from `allocate`.
            ValueError: when it comes from another layer.
        """
        if not isinstance(token, _Allocation):
            raise TypeError(
                "Received an invalid value for `token`, expected what "
                f"`allocate` returned. Received: token={token!r} of type "
                f"{type(token).__name__}"
            )
        if token.layer is not self:
            raise ValueError(
                "Received an invalid value for `token`, expected what "
                f"`allocate` returned on layer '{self.name}'. Received a "
                f"token of layer '{token.layer.name}'"
            )
        if token.active is None and self._active is not None:
            compat.untrack_variable(self, self._active)
        self.capacity, self._active = token.capacity, token.active

    def set_active_units(self, n):
        """Writes the unit count that a head with spare capacity masks its
        outputs by (its `active_units` variable).

        The masked outputs of a stage's traced functions read the count at
        run time; `expand` keeps it equal to `units`, and a growth that
        fails writes the old count back. Without spare capacity there is no
        count to write, and nothing changes.

        Args:
            n: Integer from 0 to `units`: the columns read as units, the
                leading ones.

        Raises:
            TypeError: when `n` is not an integer.
            ValueError: when `n` is below 0 or above `units`.
        """
        n = check_unit_count(n, "n", 0)
        if n > self.units:
            raise ValueError(
                "Received an invalid value for `n`, expected an integer from "
                f"0 to the layer's {self.units} units. Received: n={n}"
            )
        if self._active is not None:
            self._active.assign(n)

    def announce_units(self, n):
        """Announces the width the head will have once the stage being
        prepared starts.

        `fit` on JAX and PyTorch (and on TensorFlow under a distribution
        strategy) builds the compiled loss and metrics on the model's
        symbolic outputs before any callback can grow the head; the head
        then gives them outputs of the announced width, computed for shapes
        only and never run. `IncrementalModel` announces the width when it
        prepares a stage. Nothing else changes: `units`, the weights, the
        outputs of real calls and the declared output shape
        (`compute_output_shape`) stay as they are.

        Args:
            n: Integer >= `units`, the number of units the head will have.

        Raises:
            TypeError: when `n` is not an integer.
            ValueError: when `n` is below the layer's `units`.
        """
        self._next_units = check_unit_count(n, "n", self.units)

    @property
    def free_width(self):
        """Whether traced functions see the output width as free.

        A function traced with the width free stays valid when the head
        grows in place (no retrace); one traced with it stated must be
        remade after a growth. `IncrementalModel` frees it for the functions
        of its stages, which it keeps from stage to stage. `False` (stated)
        by default: some metrics (`F1Score`) size themselves from it inside
        the first traced step. Set it to a bool; it takes effect in the
        functions traced from then on.
        """
        return self._free_width

    @free_width.setter
    def free_width(self, value):
        self._free_width = _check_bool(value, "free_width")

    @property
    def masked_in_inference(self):
        """Whether a head with spare capacity gives all its columns, the
        inactive ones masked, also outside training (in functions traced
        with `free_width`), as it does in training.

        A teacher's head in distillation is read this way. `False` by
        default. Set it to a bool.
        """
        return self._masked_in_inference

    @masked_in_inference.setter
    def masked_in_inference(self, value):
        self._masked_in_inference = _check_bool(value, "masked_in_inference")

    def storage_width(self, units=None):
        """The width the kernel and bias are allocated with for `units`
        units (default: the current ones): `units` without spare capacity;
        with it, the capacity, doubled as often as `units` needs."""
        units = self.units if units is None else units
        if self.capacity is None:
            return units
        width = max(self.capacity, 1)
        while width < units:
            width *= 2
        return width

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
        # Its kind, not its flag: a weight replaced while the layer is
        # frozen must train again when the layer is unfrozen (Keras clears
        # the flag of a frozen layer's new weights).
        trainable = compat.tracked_as_trainable(self, old)
        compat.untrack_variable(self, old)
        return self.add_weight(
            name=name,
            shape=value.shape,
            initializer=lambda shape, dtype=None: value,
            dtype=old.dtype,
            trainable=trainable,
            regularizer=regularizer,
            constraint=constraint,
        )


class _Allocation:
    """What `ExpandableDense.allocate` returns: the layer and its capacity
    and `active_units` variable before the call."""

    def __init__(self, layer, capacity, active):
        self.layer = layer
        self.capacity = capacity
        self.active = active

    def __repr__(self):
        return f"<allocation of layer '{self.layer.name}'>"


def _check_bool(value, argument):
    if not isinstance(value, bool):
        raise TypeError(
            f"Received an invalid value for `{argument}`, expected a bool "
            f"(True or False). Received: {argument}={value!r} of type "
            f"{type(value).__name__}"
        )
    return value


def _guarded_product(product, inputs, kernel, dtype):
    """`product()`, or an empty output while `kernel` has no columns.

    Decided when the function runs, not when it is traced, so that one
    trace serves a head (a teacher's, at the first stage) before and after
    it gains units; TensorFlow's oneDNN matmul aborts the process on a
    zero-width product, so that one is never computed.
    """
    import tensorflow as tf

    def empty():
        shape = tf.concat([tf.shape(inputs)[:-1], [0]], axis=0)
        return tf.zeros(shape, dtype=dtype)

    width = tf.shape(kernel.value)[-1]
    return tf.cond(width > 0, product, empty)


def _grown_value(variable, initializer, units, grown_units, width):
    """`variable`'s value with new units from `initializer` appended, in an
    allocation `width` wide (zeros past `grown_units`)."""
    old = compat.variable_numpy(variable)
    shape = old.shape[:-1] + (grown_units,)
    value = np.zeros(old.shape[:-1] + (width,), dtype=old.dtype)
    value[..., :units] = old[..., :units]
    value[..., units:grown_units] = new_units_value(
        initializer, shape, units, variable.dtype
    )
    return value
