"""Tests for `keras_incremental.models.heads`: the one head lookup."""

import keras
import numpy as np
import pytest

import keras_incremental as ki
from keras_incremental.models import growth
from keras_incremental.models.adoption import adopt_model
from keras_incremental.models.heads import find_head
from keras_incremental.models.heads import find_layer
from keras_incremental.models.heads import iter_layers
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
