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
from keras_incremental.models.heads import HEAD_FOLLOWERS
from keras_incremental.models.heads import find_head
from keras_incremental.models.heads import iter_layers
from keras_incremental.models.heads import keeps_masked_columns
from keras_incremental.models.heads import may_follow_head
from keras_incremental.models.heads import walk_back


def check_growable_head(model, head=None):
    """Raises unless `model`'s output is its growing head.

    The head (an `ExpandableDense`) must give the model's only output,
    possibly through layers without weights that keep the width
    (`keras_incremental.models.heads.HEAD_FOLLOWERS`: `Activation`,
    `Softmax`, `Identity`, `Dropout`, ...). `Sequential` and functional
    models are checked, also when the head sits in a nested model (which
    must itself lead to the output in the same way). A subclassed model has
    no graph to check and is accepted as it is.

    Args:
        model: A Keras model.
        head: The growing head: a layer name, a layer, or `None` for the last
            `ExpandableDense` of the model. Defaults to `None`.

    Returns:
        `None`.

    Raises:
        TypeError: when `model` is not a Keras model, or `head` is not an
            `ExpandableDense` (see `keras_incremental.models.heads.find_head`).
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


def _holder_of(head):
    """`walk_back`'s `enter`: walks into the layers that hold `head`."""
    return lambda operation: (
        isinstance(operation, keras.layers.Layer) and _contains(operation, head)
    )


def _check_one_output(model, head):
    outputs = graph_outputs(model)
    if outputs is not None and len(outputs) != 1:
        _refuse_several_outputs(model, outputs, head)


def _check_leads_to_output(model, head):
    """Checks that `model`'s only output comes from `head` (or the nested
    model that holds it) through width-keeping layers only."""
    holds = _holder_of(head)

    def enter(operation):
        if not holds(operation):
            return False
        _check_one_output(operation, head)
        return True

    _check_one_output(model, head)
    for step in walk_back(model, enter):
        if step.operation is head:
            return
        if step.operation is None:
            raise ValueError(
                f"The growing head '{head.name}' does not lead to the output "
                f"of model '{step.model.name}': expected the head to be the "
                "model's output, or followed only by width-keeping layers "
                f"({_names(HEAD_FOLLOWERS)}). Received a model whose "
                "output does not come from the head; grow the `ExpandableDense`"
                " that gives the output (`head=<its name>`)."
            )
        _check_follower(step.operation, head, step.model)
    # No graph to follow (a subclassed model): accepted as it is.


def _check_follower(layer, head, model):
    """Raises unless `layer` may follow the growing head."""
    if may_follow_head(layer):
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
        f"weights that keep the width ({_names(HEAD_FOLLOWERS)}). To "
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
        if not keeps_masked_columns(layer):
            kind = type(layer).__name__
            return f"layer '{layer.name}' ({kind}) follows the head"
    return None


def _followers(model, head):
    """The layers between `head` and `model`'s output, from the output back,
    as `check_growable_head` walks them."""
    outputs = graph_outputs(model)
    if outputs is not None and len(outputs) != 1:
        return
    for step in walk_back(model, _holder_of(head)):
        if step.operation is head or step.operation is None:
            return
        yield step.operation
