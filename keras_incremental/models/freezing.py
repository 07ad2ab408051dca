"""Which layers a stage trains: freezing by name, pattern or callable."""

from keras_incremental.models.growth import layers_matching
from keras_incremental.models.heads import iter_layers
from keras_incremental.utils.patterns import compile_pattern

BACKBONE = "backbone"


def check_freeze_spec(spec):
    """Raises unless `spec` is a valid `freeze` argument.

    Raises:
        TypeError: for a `spec` of the wrong type.
        ValueError: for a pattern that is invalid or unsafe to match
            (`patterns.compile_pattern`).
    """
    if spec is None or callable(spec):
        return
    if isinstance(spec, str):
        compile_pattern(spec, "Freeze pattern")
        return
    if isinstance(spec, (list, tuple)) and all(
        isinstance(item, str) for item in spec
    ):
        for item in spec:
            compile_pattern(item, "Freeze pattern")
        return
    raise TypeError(
        "Expected `freeze` to be None, 'backbone', a layer name or regular "
        "expression, a list of them, or a callable taking a layer and "
        f"returning a bool. Received: freeze={spec!r}"
    )


def layers_to_freeze(model, head, spec):
    """The layers of `model` that `spec` freezes.

    Args:
        model: The Keras model.
        head: The classifier head, never frozen by `"backbone"`.
        spec: `None` (nothing), `"backbone"` (every layer with weights but
            the head), a layer name or regular expression matched in full
            against layer names, a list of them, or a callable
            `layer -> bool`.

    Returns:
        A list of layers, in model order.

    Raises:
        ValueError: when a name or pattern matches no layer.
    """
    check_freeze_spec(spec)
    layers = [layer for layer in iter_layers(model) if layer.weights]
    if spec is None:
        return []
    if callable(spec):
        return [layer for layer in layers if spec(layer)]
    if spec == BACKBONE:
        return [
            layer
            for layer in model.layers
            if layer is not head and layer.weights
        ]
    patterns = [spec] if isinstance(spec, str) else list(spec)
    chosen = []
    for pattern in patterns:
        matches = layers_matching(model, pattern, "Freeze pattern")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
