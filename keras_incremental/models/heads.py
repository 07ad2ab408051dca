"""Finding a model's classifier head.

One place for what several parts need to know about a model's layout: the
layers inside a model (`iter_layers`) and the layer that a name or layer
argument means (`find_layer`, `find_head`).
"""

import keras

from keras_incremental.layers import ExpandableDense
from keras_incremental.utils.messages import preview


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
