"""Tests for `keras_incremental.models.heads`: the one head lookup, the one
walk back from a model's output, and the one list of layers that may follow
a growing head."""

import keras
import numpy as np
import pytest

import keras_incremental as ki
from keras_incremental.models import growth
from keras_incremental.models.adoption import adopt_model
from keras_incremental.models.heads import HEAD_FOLLOWERS
from keras_incremental.models.heads import find_head
from keras_incremental.models.heads import find_layer
from keras_incremental.models.heads import iter_layers
from keras_incremental.models.heads import keeps_masked_columns
from keras_incremental.models.heads import may_follow_head
from keras_incremental.models.heads import passes_through
from keras_incremental.models.heads import walk_back
from keras_incremental.models.limits import check_growable_head


def backbone_with_a_head():
    """A pretrained backbone that holds a layer named 'head' of its own."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="relu", name="hidden"),
            keras.layers.Dense(4, name="head"),
        ],
        name="backbone",
    )


def classifier_on_backbone(head_kind=ki.ExpandableDense):
    """'head' twice: inside the backbone, and the classifier after it."""
    inputs = keras.Input((8,))
    head = head_kind(3, name="head")
    return keras.Model(inputs, head(backbone_with_a_head()(inputs))), head


def test_growth_keeps_its_names():
    assert growth.find_head is find_head
    assert growth.iter_layers is iter_layers


def test_iter_layers_is_depth_first():
    model, head = classifier_on_backbone()
    layers = list(iter_layers(model))
    assert [layer.name for layer in layers][1:] == [
        "backbone",
        "hidden",
        "head",
        "head",
    ]
    assert layers[1] is model.get_layer("backbone") and layers[-1] is head


def test_a_repeated_name_means_the_last_layer_of_that_name():
    model, head = classifier_on_backbone()
    inner = model.get_layer("backbone").get_layer("head")
    assert find_layer(model, "head") is head
    assert find_head(model, "head") is head
    # The same rule with the layers to choose from given: the last of them.
    assert find_layer(model, "head", layers=[head, inner]) is inner
    # A layer given as itself is that layer, wherever it sits.
    assert find_layer(model, inner) is inner
    with pytest.raises(TypeError, match="'head' is a `Dense`"):
        find_head(model, inner)


def test_a_nested_model_named_as_the_head_it_holds():
    classifier = keras.Sequential(
        [keras.Input((6,)), ki.ExpandableDense(2, name="head")], name="head"
    )
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, name="body")(inputs)
    model = keras.Model(inputs, classifier(hidden))
    # The layer inside the nested model, not the nested model.
    assert find_head(model, "head") is classifier.layers[-1]
    check_growable_head(model, "head")


def test_every_lookup_follows_the_rule():
    # Growth (before: the first 'head', the backbone's `Dense`, refused).
    model, head = classifier_on_backbone()
    model.compile(optimizer="adam", loss="mse")
    assert ki.expand(model, 2, layer="head") is head
    assert head.units == 5
    check_growable_head(model, "head")
    # Adoption and transfer.
    source, dense = classifier_on_backbone(keras.layers.Dense)
    adopted, name = adopt_model(source, list("abc"), head="head")
    assert name == "head"
    assert isinstance(adopted.layers[-1], ki.ExpandableDense)
    target, _ = classifier_on_backbone()
    report = ki.transfer_weights(
        source,
        target,
        source_classes=list("abc"),
        target_classes=list("cab"),
        head="head",
    )
    # The classes reordered the classifier, not the backbone's 'head'.
    assert report.grown["head"]["matched_by"] == "class name"
    assert "backbone/head" in report.copied
    kernel = keras.ops.convert_to_numpy(target.layers[-1].kernel)
    np.testing.assert_array_equal(
        kernel, keras.ops.convert_to_numpy(dense.kernel)[:, [2, 0, 1]]
    )


def test_find_layer_errors():
    model, head = classifier_on_backbone()
    with pytest.raises(ValueError, match="No layer named 'nope' in model"):
        find_layer(model, "nope")
    with pytest.raises(ValueError, match="No big layer named 'x'.*Received: h"):
        find_layer(model, "x", argument="h", what="big layer")
    with pytest.raises(ValueError, match="is not part of model"):
        find_layer(model, keras.layers.Dense(2))
    with pytest.raises(ValueError, match="'hidden' of model .* is not a fine"):
        find_layer(
            model, model.layers[1].layers[0], layers=[head], what="fine layer"
        )
    with pytest.raises(TypeError, match="Expected `layer` to be a layer name"):
        find_layer(model, 3)


def op_names(steps):
    return [
        None if step.operation is None else step.operation.name
        for step in steps
    ]


def test_walk_back_on_sequential_models():
    layers = [
        keras.layers.Dense(4, name="body"),
        ki.ExpandableDense(2, name="head"),
        keras.layers.Softmax(name="probabilities"),
    ]
    built = keras.Sequential([keras.Input((8,)), *layers])
    steps = list(walk_back(built))
    assert op_names(steps) == ["probabilities", "head", "body", None]
    assert all(step.model is built for step in steps)
    assert all(len(step.inputs) == 1 for step in steps[:-1])
    assert steps[-1].inputs == []
    # Not built: no graph, its layers last first.
    unbuilt = keras.Sequential(
        [keras.layers.Dense(4, name="body"), ki.ExpandableDense(2, name="h")]
    )
    assert op_names(walk_back(unbuilt)) == ["h", "body", None]


def test_walk_back_on_functional_models_and_operations():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, name="body")(inputs)
    other = keras.layers.Dense(4, name="other")(inputs)
    merged = keras.layers.Add(name="add")([hidden, other])
    outputs = keras.ops.softmax(merged)
    model = keras.Model(inputs, [outputs, other])
    steps = list(walk_back(model))
    assert isinstance(steps[0].operation, keras.Operation)
    assert not isinstance(steps[0].operation, keras.layers.Layer)
    # Through the first input of each: `add` follows `hidden`.
    assert op_names(steps)[1:] == ["add", "body", None]
    assert len(steps[1].inputs) == 2
    assert op_names(walk_back(model, index=1)) == ["other", None]
    assert list(walk_back(model, index=2)) == []


def test_walk_back_into_nested_models():
    inner_inputs = keras.Input((4,))
    inner_hidden = keras.layers.Dense(3, name="inner_body")(inner_inputs)
    inner_logits = keras.layers.Dense(2, name="inner_head")(inner_hidden)
    inner = keras.Model(inner_inputs, [inner_hidden, inner_logits], name="in")
    inputs = keras.Input((8,))
    features = keras.layers.Dense(4, name="body")(inputs)
    _, logits = inner(features)
    model = keras.Model(inputs, keras.layers.Softmax(name="soft")(logits))
    # Not entered: the nested model is one step.
    assert op_names(walk_back(model)) == ["soft", "in", "body", None]
    # Entered: its steps from the output used (its second) take its place,
    # and the walk ends at its input.
    entered = list(walk_back(model, lambda op: isinstance(op, keras.Model)))
    assert op_names(entered) == ["soft", "inner_head", "inner_body", None]
    assert [step.model for step in entered] == [model, inner, inner, inner]
    # An `enter` that refuses what it finds.

    def refuse(operation):
        raise ValueError(f"no {operation.name}")

    with pytest.raises(ValueError, match="no soft"):
        list(walk_back(model, refuse))


def test_walk_back_into_sequential_and_subclassed_models():
    nested = keras.Sequential(
        [keras.Input((4,)), ki.ExpandableDense(2, name="head")], name="clf"
    )
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, name="body"), nested]
    )
    enter = lambda op: op is nested  # noqa: E731
    assert op_names(walk_back(model, enter)) == ["head", None]

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 8), "float32"))
    assert list(walk_back(subclassed)) == []


def test_head_followers_one_list_three_checks():
    layers = {
        "activation_softmax": keras.layers.Activation("softmax"),
        "activation_linear": keras.layers.Activation("linear"),
        "activation_relu": keras.layers.Activation("relu"),
        "softmax": keras.layers.Softmax(),
        "identity": keras.layers.Identity(),
        "relu": keras.layers.ReLU(),
        "dropout": keras.layers.Dropout(0.5),
        "noise": keras.layers.GaussianNoise(0.1),
        "regularization": keras.layers.ActivityRegularization(0.1),
        "dense": keras.layers.Dense(2),
        "add": keras.layers.Add(),
    }
    may_follow = {name for name, x in layers.items() if may_follow_head(x)}
    assert may_follow == set(layers) - {"dense", "add"}
    passing = {name for name, x in layers.items() if passes_through(x)}
    assert passing == {
        "activation_linear",
        "identity",
        "dropout",
        "noise",
        "regularization",
    }
    masked = {name for name, x in layers.items() if keeps_masked_columns(x)}
    assert masked == {
        "activation_softmax",
        "activation_linear",
        "softmax",
        "identity",
    }
    # Every check is built on the one list: nothing outside it passes any.
    assert all(
        isinstance(x, tuple(HEAD_FOLLOWERS))
        for x in layers.values()
        if may_follow_head(x) or passes_through(x) or keeps_masked_columns(x)
    )

    # A layer of the list that has weights may not follow a head.
    class WeightedDropout(keras.layers.Dropout):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(1,), name="scale")

    weighted = WeightedDropout(0.5)
    weighted.build((None, 2))
    assert not may_follow_head(weighted)
    # Nor a `keras.ops` call, which the checks cannot look into.
    inputs = keras.Input((2,))
    operation = next(walk_back(keras.Model(inputs, keras.ops.softmax(inputs))))
    assert not isinstance(operation.operation, keras.layers.Layer)
    assert not may_follow_head(operation.operation)
    assert not passes_through(operation.operation)
    assert not keeps_masked_columns(operation.operation)
