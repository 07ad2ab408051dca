"""What model layouts the package supports, checked before anything runs.

A head that grows changes the width of its output: whatever follows it must
keep working with any width. A layer with weights after the head (a `Dense`
sized by the head's width) would break, and on TensorFlow it aborts the whole
process at the first `fit`, so such layouts are refused here, with an error
that says why and how to fix them.
"""

import keras

from keras_incremental import compat
from keras_incremental.models.graph import graph_outputs
from keras_incremental.models.growth import find_head
from keras_incremental.models.growth import iter_layers

# Layers without weights that keep the width of their input: they may follow
# the growing head.
WIDTH_KEEPING_LAYERS = (
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.Identity,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.ActivityRegularization,
)


def check_growable_head(model, head=None):
    """Raises unless `model`'s output is its growing head.

    The head (an `ExpandableDense`) must give the model's only output,
    possibly through layers without weights that keep the width
    (`WIDTH_KEEPING_LAYERS`: `Activation`, `Softmax`, `Identity`, `Dropout`,
    ...). `Sequential` and functional models are checked, also when the head
    sits in a nested model (which must itself lead to the output in the same
    way). A subclassed model has no graph to check and is accepted as it is.

    Args:
        model: A Keras model.
        head: The growing head: a layer name, a layer, or `None` for the last
            `ExpandableDense` of the model. Defaults to `None`.

    Returns:
        `None`.

    Raises:
        TypeError: when `model` is not a Keras model, or `head` is not an
            `ExpandableDense` (see `keras_incremental.models.growth.find_head`).
        ValueError: when the model has no such head, has several outputs,
            or reaches its output from the head through a layer that may not
            follow a growing width.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras_incremental.ExpandableDense(0, name="head"),
        keras.layers.Dense(4),  # sized by the head's width: refused
    ])
    check_growable_head(model)  # ValueError naming 'dense_1'
    ```
    """
    head = find_head(model, head)
    _check_leads_to_output(model, head)


def _contains(layer, head):
    return any(item is head for item in iter_layers(layer))


def _check_leads_to_output(model, head):
    """Checks that `model`'s only output comes from `head` (or the nested
    model that holds it) through width-keeping layers only."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        index = next(
            i
            for i, layer in enumerate(layers)
            if layer is head or _contains(layer, head)
        )
        for follower in layers[index + 1 :]:
            _check_follower(follower, head, model)
        if layers[index] is not head:
            _check_leads_to_output(layers[index], head)
        return
    outputs = graph_outputs(model)
    if outputs is None:
        return  # Subclassed: no graph to follow.
    if len(outputs) != 1:
        _refuse_several_outputs(model, outputs, head)
    tensor = outputs[0]
    while True:
        operation, inputs, _ = compat.tensor_producer(tensor)
        if operation is head:
            return
        if operation is None:
            raise ValueError(
                f"The growing head '{head.name}' does not lead to the output "
                f"of model '{model.name}': expected the head to be the "
                "model's output, or followed only by width-keeping layers "
                f"({_names(WIDTH_KEEPING_LAYERS)}). Received a model whose "
                "output does not come from the head; grow the `ExpandableDense`"
                " that gives the output (`head=<its name>`)."
            )
        if isinstance(operation, keras.layers.Layer) and _contains(
            operation, head
        ):
            _check_leads_to_output(operation, head)
            return
        _check_follower(operation, head, model)
        tensor = inputs[0]


def _check_follower(layer, head, model):
    """Raises unless `layer` may follow the growing head."""
    if isinstance(layer, WIDTH_KEEPING_LAYERS) and not layer.weights:
        return
    kind = type(layer).__name__
    if not isinstance(layer, keras.layers.Layer):
        why = (
            "it is a `keras.ops` call, which the package cannot check; use "
            "the head's `activation` or a `keras.layers.Activation` instead"
        )
    elif layer.weights:
        shapes = [tuple(v.shape) for v in layer.weights]
        why = (
            f"its weights (shapes {shapes}) are sized by the head's width, "
            "which growth changes: `fit` would fail after growing (and on "
            "TensorFlow, a 0-unit head aborts the process)"
        )
    else:
        why = "it may not keep the width of the head's output"
    raise ValueError(
        f"Layer '{layer.name}' ({kind}) follows the growing head "
        f"'{head.name}' in model '{model.name}': {why}. Expected the head "
        "to give the model's output, followed only by layers without "
        f"weights that keep the width ({_names(WIDTH_KEEPING_LAYERS)}). To "
        "fix it, make the `ExpandableDense` the last layer (with "
        "`activation=` for a softmax): if the layer after it is the real "
        "classifier, make that one the `ExpandableDense` (`IncrementalModel."
        "adopt` turns a trained model's `Dense` output into one)."
    )


def _refuse_several_outputs(model, outputs, head):
    names = [
        getattr(compat.tensor_producer(t)[0], "name", "an input")
        for t in outputs
    ]
    head_output = (
        f"model.get_layer('{head.name}').output"
        if any(layer is head for layer in model.layers)
        else "<the head's output tensor>"
    )
    raise ValueError(
        "Models with several outputs are not supported: the growing head "
        "must be the model's only output. Received model "
        f"'{model.name}' with {len(outputs)} outputs, from {names}. Train "
        "incrementally a model with the head as its only output, which "
        "shares the layers and weights of this one, e.g. "
        f"`keras.Model(model.inputs, {head_output})`"
        " (with its activation layers, if any); the other outputs stay "
        "available through the original model."
    )


def _names(classes):
    return ", ".join(cls.__name__ for cls in classes)


def spare_capacity_problem(model, head):
    """Why masked spare columns of `head` would not stay masked in `model`,
    or `None` when they would.

    Inside a stage's train step a head with spare capacity gives its
    inactive columns at a large negative logit, which a softmax and a
    cross-entropy ignore. An activity regularizer, or a layer after the
    head other than a softmax or a pass-through (`Dropout` zeroes entries,
    `ReLU` clips them), would turn them into values that count.
    """
    if head.activity_regularizer is not None:
        return f"the head '{head.name}' has an activity regularizer"
    for layer in _followers(model, head):
        activation = getattr(layer, "activation", None)
        if isinstance(layer, (keras.layers.Softmax, keras.layers.Identity)):
            continue
        if isinstance(layer, keras.layers.Activation) and activation in (
            keras.activations.softmax,
            keras.activations.linear,
        ):
            continue
        return f"layer '{layer.name}' ({type(layer).__name__}) follows the head"
    return None


def _followers(model, head):
    """The layers between `head` and `model`'s output, as
    `check_growable_head` walks them."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        index = next(
            i
            for i, layer in enumerate(layers)
            if layer is head or _contains(layer, head)
        )
        if layers[index] is not head:
            yield from _followers(layers[index], head)
        yield from layers[index + 1 :]
        return
    outputs = graph_outputs(model)
    if outputs is None or len(outputs) != 1:
        return
    tensor = outputs[0]
    while True:
        operation, inputs, _ = compat.tensor_producer(tensor)
        if operation is head or operation is None:
            return
        if isinstance(operation, keras.layers.Layer) and _contains(
            operation, head
        ):
            yield from _followers(operation, head)
            return
        yield operation
        tensor = inputs[0]
