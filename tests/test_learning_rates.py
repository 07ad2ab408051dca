import keras
import numpy as np
import pytest

import keras_incremental as ki
from keras_incremental.models.heads import iter_layers
from keras_incremental.optimizers.gradients import gradient_function
from keras_incremental.optimizers.learning_rates import group_pattern
from keras_incremental.optimizers.learning_rates import multiplier_optimizer
from keras_incremental.optimizers.learning_rates import plan_groups
from keras_incremental.optimizers.learning_rates import rebuild_optimizer
from keras_incremental.optimizers.learning_rates import update_multipliers
from keras_incremental.optimizers.multiplier_optimizer import (
    MultiplierOptimizer,
)

LR = 0.1
BODY = group_pattern(["body"])


def mlp():
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="tanh", name="body"),
            ki.ExpandableDense(3, name="head"),
        ]
    )


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


def compiled(model, optimizer):
    model.compile(optimizer=optimizer, loss="mse")
    return model


def rates(optimizer):
    return sorted(
        float(keras.ops.convert_to_numpy(o.learning_rate))
        for o in optimizer.optimizers
    )


def assert_one_step(model, multiplier_of, lr=LR):
    """One SGD step updates each variable by lr * multiplier * gradient."""
    x, y = batch()
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]

    def loss_fn(x, y):
        return keras.ops.mean(keras.losses.mean_squared_error(y, model(x)))

    _, grads = gradient_function(loss_fn, variables)(x, y)
    grads = [keras.ops.convert_to_numpy(g) for g in grads]
    model.train_on_batch(x, y)
    for variable, old, grad in zip(variables, before, grads, strict=True):
        expected = lr * multiplier_of(variable) * grad
        np.testing.assert_allclose(
            old - variable.numpy(), expected, rtol=1e-4, atol=1e-7
        )


# MultiplierOptimizer ------------------------------------------------------


def test_learning_rate_is_the_base_rate_and_groups_follow():
    optimizer = MultiplierOptimizer(keras.optimizers.SGD(LR), {BODY: 0.5})
    assert float(
        keras.ops.convert_to_numpy(optimizer.learning_rate)
    ) == pytest.approx(LR)
    assert rates(optimizer) == pytest.approx([0.05, 0.1])
    optimizer.learning_rate = 0.02
    assert rates(optimizer) == pytest.approx([0.01, 0.02])
    # A group's own rate cannot drift from base * multiplier.
    optimizer.optimizers[0].learning_rate = 0.3
    assert rates(optimizer) == pytest.approx([0.01, 0.02])
    model = compiled(mlp(), optimizer)
    assert_one_step(model, lambda v: 0.5 if "body" in v.path else 1.0, 0.02)


@pytest.mark.parametrize(
    "callback, expected_base",
    [
        (keras.callbacks.LearningRateScheduler(lambda epoch: 0.02), 0.02),
        (
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2),
            LR / 4,
        ),
        (
            keras.callbacks.ReduceLROnPlateau(
                "loss", factor=0.5, patience=1, min_delta=1e9
            ),
            LR / 2,
        ),
    ],
)
def test_keras_learning_rate_callbacks_keep_the_ratios(callback, expected_base):
    optimizer = MultiplierOptimizer(keras.optimizers.SGD(LR), {BODY: 0.25})
    model = compiled(mlp(), optimizer)
    history = model.fit(*batch(), epochs=2, verbose=0, callbacks=[callback])
    base = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    assert base == pytest.approx(expected_base)
    assert rates(optimizer) == pytest.approx([base * 0.25, base])
    # Logged per sub-optimizer (before `ReduceLROnPlateau` reduces them).
    logged = sorted(
        v[-1] for k, v in history.history.items() if "learning_rate" in k
    )
    assert len(logged) == 2
    assert logged[0] == pytest.approx(logged[1] * 0.25)


def test_set_multipliers_reaches_a_traced_train_function():
    optimizer = MultiplierOptimizer(keras.optimizers.SGD(LR), {BODY: 0.5})
    model = compiled(mlp(), optimizer)
    model.train_on_batch(*batch())
    train_function = model.train_function
    optimizer.set_multipliers({BODY: 2.0})
    assert optimizer.multipliers == {BODY: 2.0}
    assert_one_step(model, lambda v: 2.0 if "body" in v.path else 1.0)
    assert model.train_function is train_function
    with pytest.raises(ValueError, match="exactly the patterns"):
        optimizer.set_multipliers({"other/.+": 2.0})


def test_save_and_load_keep_rates_multipliers_and_state(tmp_path):
    optimizer = MultiplierOptimizer(
        keras.optimizers.SGD(LR, momentum=0.9), {BODY: 0.5}
    )
    model = compiled(mlp(), optimizer)
    model.fit(*batch(), epochs=2, verbose=0)
    optimizer.learning_rate = 0.05
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.optimizer
    assert isinstance(restored, MultiplierOptimizer)
    assert float(
        keras.ops.convert_to_numpy(restored.learning_rate)
    ) == pytest.approx(0.05)
    assert restored.multipliers == {BODY: 0.5}
    assert rates(restored) == pytest.approx([0.025, 0.05])
    for saved, read in zip(
        optimizer.variables, restored.variables, strict=True
    ):
        np.testing.assert_array_equal(saved.numpy(), read.numpy())
    config = restored.get_config()
    again = MultiplierOptimizer.from_config(config)
    assert again.get_config() == config


def test_plain_sgd_step_after_load_model(tmp_path):
    # Keras 3.15's `load_model` renames the variable paths
    # (`sequential/body/kernel` -> `body/kernel`; 3.16 keeps them): the
    # groups must reach them either way.
    model = compiled(
        mlp(), MultiplierOptimizer(keras.optimizers.SGD(LR), {BODY: 0.5})
    )
    model.train_on_batch(*batch())
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_one_step(loaded, lambda v: 0.5 if "body" in v.path else 1.0)


@pytest.mark.parametrize(
    "optimizer, multipliers, error, match",
    [
        (keras.optimizers.SGD(LR), {BODY: 0}, ValueError, "> 0"),
        (keras.optimizers.SGD(LR), {BODY: -1.0}, ValueError, "> 0"),
        (keras.optimizers.SGD(LR), {BODY: float("nan")}, ValueError, "> 0"),
        (keras.optimizers.SGD(LR), {BODY: True}, ValueError, "> 0"),
        (keras.optimizers.SGD(LR), {"(": 0.5}, ValueError, "regular"),
        (keras.optimizers.SGD(LR), [BODY], TypeError, "dict"),
        (
            keras.optimizers.SGD(
                keras.optimizers.schedules.ExponentialDecay(LR, 10, 0.9)
            ),
            {BODY: 0.5},
            ValueError,
            "constant learning rate",
        ),
        (
            MultiplierOptimizer(keras.optimizers.SGD(LR), {}),
            {BODY: 0.5},
            TypeError,
            "plain Keras optimizer",
        ),
    ],
)
def test_bad_arguments(optimizer, multipliers, error, match):
    with pytest.raises(error, match=match):
        MultiplierOptimizer(optimizer, multipliers)


def test_update_multipliers_in_place_or_not():
    model = mlp()
    groups = plan_groups(model, {"body": 0.5})
    optimizer = multiplier_optimizer(keras.optimizers.Adam(LR), LR, groups)
    assert optimizer.multipliers == {BODY: 0.5}
    assert update_multipliers(optimizer, {0.25: ["body"]})
    assert optimizer.multipliers == {BODY: 0.25}
    assert not update_multipliers(optimizer, {0.25: ["body", "head"]})
    assert not update_multipliers(keras.optimizers.Adam(), groups)


# Nested models ------------------------------------------------------------


def backbone_model(kind):
    """A classifier whose hidden layers `d1`, `d2` sit in model `backbone`."""
    if kind == "sequential":
        backbone = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(6, activation="tanh", name="d1"),
                keras.layers.Dense(5, activation="tanh", name="d2"),
            ],
            name="backbone",
        )
        return keras.Sequential(
            [keras.Input((8,)), backbone, ki.ExpandableDense(3, name="head")]
        )
    if kind == "sequential_unbuilt":
        # Built inside the outer model: its layers' paths name it.
        backbone = keras.Sequential(
            [
                keras.layers.Dense(6, activation="tanh", name="d1"),
                keras.layers.Dense(5, activation="tanh", name="d2"),
            ],
            name="backbone",
        )
        return keras.Sequential(
            [keras.Input((8,)), backbone, ki.ExpandableDense(3, name="head")]
        )
    # Functional: the inner paths do not name the backbone.
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, activation="tanh", name="d1")(inputs)
    hidden = keras.layers.Dense(5, activation="tanh", name="d2")(hidden)
    backbone = keras.Model(inputs, hidden, name="backbone")
    outer = keras.Input((8,))
    outputs = ki.ExpandableDense(3, name="head")(backbone(outer))
    return keras.Model(outer, outputs, name="classifier")


def with_rates(model, learning_rates):
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    groups = plan_groups(model, learning_rates)
    rebuild_optimizer(model, multiplier_optimizer(model.optimizer, LR, groups))
    return groups


def multiplier_by_layer(model, multipliers):
    """`variable -> multiplier` from `{layer name: multiplier}`."""
    by_id = {}
    for layer in iter_layers(model):
        for variable in layer.weights:
            by_id[id(variable)] = multipliers.get(layer.name, 1.0)
    return lambda variable: by_id[id(variable)]


@pytest.mark.parametrize("kind", ["sequential", "sequential_unbuilt", "func"])
@pytest.mark.parametrize(
    "key, expected",
    [
        ("backbone", {"d1": 0.5, "d2": 0.5}),
        ("d2", {"d2": 0.5}),
        ("d.", {"d1": 0.5, "d2": 0.5}),
    ],
)
def test_nested_layers_get_their_rate(kind, key, expected, tmp_path):
    model = backbone_model(kind)
    groups = with_rates(model, {key: 0.5})
    assert groups == {0.5: sorted(expected)}
    assert_one_step(model, multiplier_by_layer(model, expected))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, MultiplierOptimizer)
    assert_one_step(loaded, multiplier_by_layer(loaded, expected))


def test_first_pattern_wins_inside_a_nested_model():
    model = backbone_model("func")
    groups = with_rates(model, {"d1": 0.25, "backbone": 0.5})
    assert groups == {0.25: ["d1"], 0.5: ["d2"]}
    assert_one_step(model, multiplier_by_layer(model, {"d1": 0.25, "d2": 0.5}))


def test_layer_made_of_sublayers_gets_its_rate():
    # `MultiHeadAttention` variables sit deeper: `mha/query/kernel`.
    inputs = keras.Input((8,))
    tokens = keras.layers.Reshape((4, 2))(inputs)
    attended = keras.layers.MultiHeadAttention(2, 3, name="mha")(tokens, tokens)
    outputs = ki.ExpandableDense(3, name="head")(
        keras.layers.Flatten()(attended)
    )
    model = keras.Model(inputs, outputs)
    with_rates(model, {"mha": 0.5})
    assert_one_step(model, multiplier_by_layer(model, {"mha": 0.5}))


def test_layers_of_the_same_name_in_different_groups_are_refused():
    backbone = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, name="dense")],
        name="backbone",
    )
    model = keras.Sequential(
        [
            keras.Input((8,)),
            backbone,
            keras.layers.Dense(4, name="dense"),
            ki.ExpandableDense(3, name="head"),
        ]
    )
    with pytest.raises(ValueError, match="cannot be told apart"):
        plan_groups(model, {"backbone": 0.5})
    # In the same group, the shared name is no ambiguity.
    assert plan_groups(model, {"backbone|dense": 0.5}) == {0.5: ["dense"]}


def test_pattern_matching_no_layer_is_refused():
    with pytest.raises(ValueError, match="matches no layer"):
        plan_groups(backbone_model("func"), {"encoder": 0.5})


def test_incremental_model_applies_rates_inside_a_nested_backbone():
    # One SGD step from the same weights, with and without the multiplier:
    # the backbone moves half as far, the head as far.
    x, y = batch(32)
    labels = np.arange(32) % 3
    deltas = []
    for learning_rates in (None, {"backbone": 0.5}):
        keras.utils.set_random_seed(3)
        model = backbone_model("func")
        model.compile(
            optimizer=keras.optimizers.SGD(LR),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        inc = ki.IncrementalModel(
            model=model, strategy="replay", learning_rates=learning_rates
        )
        xs, ys = inc.prepare(x, labels)
        before = [v.numpy() for v in model.trainable_variables]
        model.fit(
            xs, ys, batch_size=32, shuffle=False, verbose=0, callbacks=[inc]
        )
        after = [v.numpy() for v in model.trainable_variables]
        deltas.append(
            {
                v.path: b - a
                for v, b, a in zip(
                    model.trainable_variables, before, after, strict=True
                )
            }
        )
    plain, scaled = deltas
    for path, delta in plain.items():
        factor = 1.0 if path.startswith("head") else 0.5
        np.testing.assert_allclose(
            scaled[path], factor * delta, rtol=1e-4, atol=1e-7
        )


def test_incremental_model_keeps_nested_groups_across_stages():
    x, y = batch(32)
    labels = np.arange(32) % 3
    model = backbone_model("func")
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inc = ki.IncrementalModel(
        model=model, strategy="replay", learning_rates={"backbone": 0.5}
    )
    model.fit(*inc.prepare(x, labels), verbose=0, callbacks=[inc])
    optimizer = model.optimizer
    assert isinstance(optimizer, MultiplierOptimizer)
    assert rates(optimizer) == pytest.approx([LR * 0.5, LR])
    # Same groups, new multiplier: the optimizer and its state stay.
    inc.learning_rates = {"backbone": 0.25}
    model.fit(*inc.prepare(x, labels), verbose=0, callbacks=[inc])
    assert model.optimizer is optimizer
    assert rates(optimizer) == pytest.approx([LR * 0.25, LR])


def test_a_model_compiled_with_the_groups_restores_from_its_checkpoint(
    tmp_path,
):
    # The groups asked for are those the optimizer has: the first stage
    # updates them in place, and the checkpoint still saves the base rate
    # beside them (without it, `restore` refused the file).
    keras.utils.set_random_seed(0)
    model = ki.ExpandableDense(0, name="head")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="tanh", name="body"),
            model,
        ]
    )
    model.compile(
        optimizer=MultiplierOptimizer(keras.optimizers.SGD(LR), {BODY: 0.5}),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    path = tmp_path / "stages.keras"
    inc = ki.IncrementalModel(
        model=model,
        learning_rates={"body": 0.5},
        checkpoint=str(path),
        capacity=None,
    )
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    model.fit(*inc.prepare(x, [0, 1] * 8), epochs=1, verbose=0, callbacks=[inc])
    assert inc.state()["base_rate"] == pytest.approx(LR)
    restored_model, restored = ki.IncrementalModel.restore(str(path))
    assert restored.learning_rates == {"body": 0.5}
    assert restored.state()["groups"] == inc.state()["groups"]
