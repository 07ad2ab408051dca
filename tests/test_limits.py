import keras
import pytest

import keras_incremental as ki
from keras_incremental.models.limits import check_growable_head


def sequential(*after, units=0):
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, activation="relu", name="body"),
            ki.ExpandableDense(units, name="head"),
            *after,
        ]
    )


@pytest.mark.parametrize(
    "after",
    [
        [],
        [keras.layers.Softmax()],
        [keras.layers.Activation("softmax")],
        [keras.layers.Dropout(0.1), keras.layers.Identity()],
    ],
    ids=["head-last", "softmax", "activation", "dropout-identity"],
)
def test_head_at_the_output_is_accepted(after):
    assert check_growable_head(sequential(*after)) is None


def test_layer_with_weights_after_the_head_is_refused():
    # With 0 units, a fit would abort the process in oneDNN: only check.
    model = sequential(keras.layers.Dense(4, name="after"), units=0)
    with pytest.raises(ValueError) as info:
        check_growable_head(model)
    message = str(info.value)
    assert "'after' (Dense) follows the growing head 'head'" in message
    assert "sized by the head's width" in message
    assert "make the `ExpandableDense` the last layer" in message


def test_head_by_name_or_layer():
    model = sequential(keras.layers.Softmax())
    check_growable_head(model, "head")
    check_growable_head(model, model.get_layer("head"))
    with pytest.raises(TypeError, match="ExpandableDense"):
        check_growable_head(model, "body")


def functional(head_then=lambda x: x):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, activation="relu", name="body")(inputs)
    outputs = head_then(ki.ExpandableDense(2, name="head")(hidden))
    return keras.Model(inputs, outputs), inputs, hidden


def test_functional_head_with_activation_is_accepted():
    model, _, _ = functional(keras.layers.Activation("softmax"))
    check_growable_head(model)


def test_functional_two_outputs_are_refused():
    _, inputs, hidden = functional()
    head = ki.ExpandableDense(2, name="head")(hidden)
    other = keras.layers.Dense(1, name="score")(hidden)
    model = keras.Model(inputs, [head, other])
    with pytest.raises(ValueError) as info:
        check_growable_head(model)
    message = str(info.value)
    assert (
        "several outputs are not supported: the growing head must be the "
        "model's only output" in message
    )
    assert "['head', 'score']" in message
    assert "keras.Model(model.inputs, model.get_layer('head').output)" in (
        message
    )


def test_functional_keras_op_after_head_is_refused():
    model, _, _ = functional(keras.ops.softmax)
    with pytest.raises(ValueError, match="`keras.ops` call"):
        check_growable_head(model)


def test_head_merged_with_another_tensor_is_refused():
    _, inputs, hidden = functional()
    head = ki.ExpandableDense(2, name="head")(hidden)
    merged = keras.layers.Concatenate(name="merge")([head, hidden])
    with pytest.raises(ValueError, match="'merge' \\(Concatenate\\)"):
        check_growable_head(keras.Model(inputs, merged))


def nested_classifier(features=4):
    return keras.Sequential(
        [
            keras.Input((features,)),
            ki.ExpandableDense(2, name="head"),
            keras.layers.Softmax(),
        ],
        name="classifier",
    )


def test_nested_model_head_is_accepted():
    backbone = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, name="d1")], name="backbone"
    )
    # Nested in a Sequential model, as its last layer.
    model = keras.Sequential([keras.Input((8,)), backbone, nested_classifier()])
    check_growable_head(model)
    # Nested in a functional model, followed by a width-keeping layer.
    inputs = keras.Input((8,))
    outputs = keras.layers.Identity()(nested_classifier()(backbone(inputs)))
    check_growable_head(keras.Model(inputs, outputs))


def test_nested_model_head_followed_by_dense_is_refused():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            nested_classifier(8),
            keras.layers.Dense(3, name="after"),
        ]
    )
    with pytest.raises(ValueError, match="'after' \\(Dense\\) follows"):
        check_growable_head(model)
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            ki.ExpandableDense(2, name="head"),
            keras.layers.Dense(3, name="inner_after"),
        ],
        name="inner",
    )
    inputs = keras.Input((8,))
    with pytest.raises(ValueError, match="'inner_after' \\(Dense\\)"):
        check_growable_head(keras.Model(inputs, inner(inputs)))


def test_subclassed_model_is_accepted_unchecked():
    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = ki.ExpandableDense(2, name="head")

        def call(self, x):
            return self.head(x)

    model = Classifier()
    model(keras.ops.zeros((1, 8)))
    check_growable_head(model)


def test_model_without_expandable_head_is_refused():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no `ExpandableDense`"):
        check_growable_head(model)
