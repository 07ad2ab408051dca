"""Finding a model's classifier head, and walking from its output to it.

One place for what several parts need to know about a model's layout: the
layers inside a model (`iter_layers`), the layer that a name or layer
argument means (`find_layer`, `find_head`), the steps from a model's output
back to its input (`walk_back`), and the layers that may stand between a
growing head and the output (`HEAD_FOLLOWERS`).
"""

import typing

import keras

from keras_incremental import compat
from keras_incremental.layers import ExpandableDense
from keras_incremental.models.graph import graph_outputs
from keras_incremental.utils.messages import preview

# The layers without weights that may follow a growing head: each keeps the
# width of its input, so that the model's output grows with the head. What
# each gives tells apart the checks built on this one list (`may_follow_head`,
# `passes_through`, `keeps_masked_columns`):
# - "identity": its input.
# - "inference identity": its input at inference; in training it drops
#   entries, adds noise, or adds a loss on its input.
# - "softmax": the softmax of its input.
# - "activation": its `activation` function of its input.
# - "elementwise": another function of each entry.
HEAD_FOLLOWERS = {
    keras.layers.Activation: "activation",
    keras.layers.Softmax: "softmax",
    keras.layers.Identity: "identity",
    keras.layers.ReLU: "elementwise",
    keras.layers.LeakyReLU: "elementwise",
    keras.layers.ELU: "elementwise",
    keras.layers.Dropout: "inference identity",
    keras.layers.AlphaDropout: "inference identity",
    keras.layers.GaussianDropout: "inference identity",
    keras.layers.GaussianNoise: "inference identity",
    keras.layers.ActivityRegularization: "inference identity",
}


def iter_layers(model):
    """Every layer inside `model`, depth first, nested models included.

    Args:
        model: A Keras model (or any layer with `layers`).

    Yields:
        Each layer of `model.layers`, followed right away by the layers
        inside it when it has some (a nested model).
    """
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def find_layer(model, layer, argument="layer", layers=None, what="layer"):
    """The layer of `model` that a name or a layer argument means.

    Keras keeps the names of a model's own layers unique, but a nested model
    may hold a layer of the same name as a layer of the outer model, or as
    itself. A name then means the **last** layer of that name in depth-first
    order (`iter_layers`: a nested model's layers come right after it). In
    a model built in order that is the one nearest the output: the
    classifier a user names, not a layer of the same name inside a backbone
    before it, nor the nested model that holds it. The default head of
    `find_head`, the last `ExpandableDense`, follows the same order.

    Args:
        model: A Keras model.
        layer: A layer name, or a layer of `model`.
        argument: The name of the argument `layer` was given as, for the
            error messages. Defaults to `"layer"`.
        layers: Optional list of the layers of `model` to choose from, in
            depth-first order. Defaults to `None`: every layer inside
            `model` (`iter_layers(model)`).
        what: What `layers` are, for the error messages (such as
            `"layer with weights"`). Defaults to `"layer"`.

    Returns:
        The layer.

    Raises:
        TypeError: when `layer` is neither a string nor a layer.
        ValueError: when no layer of `layers` has that name, or is `layer`.

    Example:

    ```python
    backbone = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, name="head")],
        name="backbone",
    )
    inputs = keras.Input((8,))
    head = keras_incremental.ExpandableDense(3, name="head")
    model = keras.Model(inputs, head(backbone(inputs)))
    find_layer(model, "head") is head  # True: the last 'head'
    ```
    """
    if layers is None:
        layers = list(iter_layers(model))
    if isinstance(layer, str):
        matches = [item for item in layers if item.name == layer]
        if not matches:
            raise ValueError(
                f"No {what} named '{layer}' in model '{model.name}'; expected "
                f"one of {preview([item.name for item in layers], 50)}. "
                f"Received: {argument}='{layer}'"
            )
        return matches[-1]
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            f"Expected `{argument}` to be a layer name, a layer or `None`. "
            f"Received: {argument}={layer!r} of type {type(layer).__name__}"
        )
    if any(item is layer for item in layers):
        return layer
    if any(item is layer for item in iter_layers(model)):
        raise ValueError(
            f"Layer '{layer.name}' of model '{model.name}' is not a {what}; "
            f"expected one of {preview([item.name for item in layers], 50)}. "
            f"Received: {argument}={layer!r}"
        )
    raise ValueError(
        f"Layer '{layer.name}' is not part of model '{model.name}'; expected "
        f"a {what} of the model. Received: {argument}={layer!r}"
    )


def find_head(model, layer=None):
    """The `ExpandableDense` of `model` named or given by `layer`.

    A name held by several layers (in nested models) means the last of them
    in depth-first order, see `find_layer`.

    Args:
        model: A Keras model.
        layer: A layer name, a layer of `model`, or `None` for the last
            `ExpandableDense` of the model (in depth-first order,
            `iter_layers`). Defaults to `None`.

    Returns:
        The `ExpandableDense` layer.

    Raises:
        TypeError: when `model` is not a Keras model, or `layer` is neither a
            name nor a layer, or names a layer that is not an
            `ExpandableDense`.
        ValueError: when no such layer is in the model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    layers = list(iter_layers(model))
    if layer is None:
        heads = [item for item in layers if isinstance(item, ExpandableDense)]
        if not heads:
            names = [item.name for item in layers]
            raise ValueError(
                f"Model '{model.name}' has no `ExpandableDense` layer to grow; "
                "expected one as its classifier head. Replace the last "
                "`keras.layers.Dense` with `keras_incremental.ExpandableDense`."
                f" Received a model with layers: {preview(names, 50)}"
            )
        return heads[-1]
    found = find_layer(model, layer, layers=layers)
    if not isinstance(found, ExpandableDense):
        raise TypeError(
            f"Layer '{found.name}' is a `{type(found).__name__}`; expected a "
            "`keras_incremental.ExpandableDense`, the only layer that can "
            "grow in place."
        )
    return found


class Step(typing.NamedTuple):
    """One step of `walk_back`: what made a tensor on the way from a
    model's output to its input.

    Attributes:
        operation: The layer or `keras.ops` operation that made the tensor,
            or `None` at a model input.
        inputs: The symbolic tensors it was called on (the first of them is
            the next step's tensor), or `[]` at a model input and in a
            `Sequential` model without a graph.
        index: Which of its outputs the tensor is.
        model: The model (the one walked, or a nested one walked into) in
            whose graph or layers the step is.
    """

    operation: typing.Any
    inputs: list
    index: int
    model: typing.Any


def walk_back(model, enter=None, index=0):
    """Yields the steps from `model`'s output back to its input.

    A model with a graph (functional, or a built `Sequential`) is walked
    through it: first the layer or `keras.ops` operation that made output
    `index`, then the one that made the first input of that one, and so on.
    A `Sequential` model without a graph (not built yet) is walked through
    its layers, last first. The walk ends with a step whose `operation` is
    `None`, at the model's input; earlier where an operation was called on
    no tensor. A model with no graph and no layer list (a subclassed model)
    gives no step.

    A layer met on the way for which `enter(layer)` is true, such as a
    nested model, is walked into instead of given as a step: the steps
    inside it, from the output that the outer graph uses back to its input,
    take its place, and the walk ends inside it. A layer inside which the
    walk finds no graph gives no more steps.

    Stopping early (a `break` or `return` in the loop over the steps) is
    the way to stop at a layer.

    Args:
        model: A Keras model.
        enter: Optional callable taking a layer or operation and telling
            whether to walk into it; it may also raise, to refuse what it
            finds. Defaults to `None`: nothing is walked into.
        index: Which output of `model` to start from. Defaults to `0`.

    Yields:
        `Step` tuples `(operation, inputs, index, model)`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras_incremental.ExpandableDense(3, name="head"),
        keras.layers.Softmax(name="probabilities"),
    ])
    [step.operation.name for step in walk_back(model) if step.operation]
    # ['probabilities', 'head']
    ```
    """
    outputs = graph_outputs(model)
    if outputs is None:
        if isinstance(model, keras.Sequential):
            yield from _walk_layers(model, enter)
        return
    if index >= len(outputs):
        return
    tensor = outputs[index]
    while True:
        operation, inputs, at = compat.tensor_producer(tensor)
        if operation is not None and enter is not None and enter(operation):
            yield from walk_back(operation, enter, at)
            return
        yield Step(operation, inputs, at, model)
        if operation is None or not inputs:
            return
        tensor = inputs[0]


def _walk_layers(model, enter):
    """`walk_back` for a `Sequential` model without a graph."""
    for layer in reversed(model.layers):
        if enter is not None and enter(layer):
            yield from walk_back(layer, enter)
            return
        yield Step(layer, [], 0, model)
    yield Step(None, [], 0, model)


def may_follow_head(layer):
    """Whether `layer` may follow a growing head.

    Args:
        layer: A layer or `keras.ops` operation.

    Returns:
        Whether it is one of `HEAD_FOLLOWERS` (a layer that keeps the width
        of its input), without weights.
    """
    return _follower_kind(layer) is not None and not layer.weights


def passes_through(layer):
    """Whether `layer` gives its input as it is, at inference.

    Args:
        layer: A layer or `keras.ops` operation.

    Returns:
        Whether it is an "identity" or "inference identity" one of
        `HEAD_FOLLOWERS` (`Identity`, `Dropout`, `GaussianNoise`, ...), or
        an `Activation` whose function is `keras.activations.linear`.
    """
    kind = _follower_kind(layer)
    return kind in ("identity", "inference identity") or (
        kind == "activation" and layer.activation is keras.activations.linear
    )


def keeps_masked_columns(layer):
    """Whether a masked column (a large negative logit) stays one that a
    softmax and a cross-entropy ignore through `layer`, in training.

    Args:
        layer: A layer or `keras.ops` operation.

    Returns:
        Whether it is the `Identity` or `Softmax` of `HEAD_FOLLOWERS`, or an
        `Activation` whose function is `keras.activations.softmax` or
        `keras.activations.linear`. A `Dropout` (zeroes entries), `ReLU`
        (clips them), `GaussianNoise` or `ActivityRegularization` (a loss on
        the masked values) would make the column count.
    """
    kind = _follower_kind(layer)
    return kind in ("identity", "softmax") or (
        kind == "activation"
        and layer.activation
        in (keras.activations.softmax, keras.activations.linear)
    )


def _follower_kind(layer):
    """The kind `HEAD_FOLLOWERS` gives `layer`'s class, or `None`."""
    for cls, kind in HEAD_FOLLOWERS.items():
        if isinstance(layer, cls):
            return kind
    return None
