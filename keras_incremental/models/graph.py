"""The graph of layers of a functional model."""


def graph_outputs(model):
    """The symbolic output tensors of a model built as a graph of layers.

    Args:
        model: A Keras model.

    Returns:
        A flat list of `KerasTensor`s for a functional model (a `Sequential`
        one with a known input included), or `None` for a model without a
        graph: a subclassed model, a `Sequential` model not yet built.
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return None if outputs is None else list(outputs)
