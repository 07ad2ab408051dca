"""Gradients of a loss with respect to Keras variables, on every backend.

Keras 3 leaves automatic differentiation to the backend (`tf.GradientTape`,
`jax.grad`, `torch.autograd`); the strategies that need gradients outside
`fit` (EWC's Fisher estimate, label smoothing's adoption steps) take them
from `gradient_function`, written once per backend here.
"""

import keras


def gradient_function(loss_fn, variables, state=()):
    """A compiled `(*args) -> (loss, gradients)` for `loss_fn(*args)`.

    Args:
        loss_fn: A function of tensors (NumPy arrays are converted) that
            reads `variables` (through layers or directly) and returns a
            scalar loss, written with `keras.ops`.
        variables: The list of trainable `keras.Variable`s to differentiate
            with respect to.
        state: Other variables `loss_fn` may read and update, such as a
            model's `non_trainable_variables` (batch-normalization
            statistics, dropout seeds): on JAX they go through the compiled
            function and their updates are assigned after each call, as on
            the other backends. Defaults to none.

    Returns:
        A function that takes `loss_fn`'s arguments and returns the loss and
        a list of gradients, one per variable, in order (zeros for a
        variable the loss does not read), as backend tensors. On TensorFlow
        it is a `tf.function` and on JAX a `jax.jit` function, traced once
        per input signature; on PyTorch it runs eagerly.

    Example:

    ```python
    def loss_fn(x, y):
        logits = model(x, training=False)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True
            )
        )

    step = gradient_function(loss_fn, model.trainable_variables)
    loss, grads = step(x_batch, y_batch)
    ```
    """
    variables = list(variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(loss_fn, variables)
    if backend == "jax":
        return _jax(loss_fn, variables, list(state))
    if backend == "torch":
        return _torch(loss_fn, variables)
    raise ValueError(
        "Gradients need the TensorFlow, JAX or PyTorch backend. Received: "
        f"backend='{backend}'"
    )


def _tensorflow(loss_fn, variables):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run(*args):
        with tf.GradientTape() as tape:
            loss = loss_fn(*args)
        grads = tape.gradient(loss, variables)
        return loss, [
            tf.zeros_like(v) if g is None else g
            for v, g in zip(variables, grads, strict=True)
        ]

    return run


def _jax(loss_fn, variables, state):
    import jax

    def pure(values, state_values, *args):
        # The variables read as the traced `values`, so that `jax.grad`
        # sees them, and the state as traced inputs whose updates are
        # returned; anything else the loss reads is a constant.
        mapping = list(zip(variables, values, strict=True))
        mapping += list(zip(state, state_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss = loss_fn(*args)
            updated = [scope.get_current_value(v) for v in state]
        return loss, updated

    compiled = jax.jit(jax.value_and_grad(pure, has_aux=True))

    def run(*args):
        (loss, updated), grads = compiled(
            [v.value for v in variables], [v.value for v in state], *args
        )
        for variable, value in zip(state, updated, strict=True):
            variable.assign(value)
        return loss, grads

    return run


def _torch(loss_fn, variables):
    import torch

    def run(*args):
        args = [keras.ops.convert_to_tensor(a) for a in args]
        loss = loss_fn(*args)
        values = [v.value for v in variables]
        grads = torch.autograd.grad(loss, values, allow_unused=True)
        return loss.detach(), [
            torch.zeros_like(v) if g is None else g
            for v, g in zip(values, grads, strict=True)
        ]

    return run
