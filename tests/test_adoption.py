import zipfile

import keras
import numpy as np
import pytest
from helpers import assert_same_logits
from helpers import data
from helpers import values

import keras_incremental as ki
from keras_incremental.models.adoption import adopt_model

ops = keras.ops

CLASSES = ["cat", "dog", "bird"]
SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def sequential(activation=None, **head_kwargs):
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="body"),
            keras.layers.Dense(
                3, activation=activation, name="out", **head_kwargs
            ),
        ]
    )


def functional(tail):
    """Auto-named layers; `tail` picks what makes the probabilities."""
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    if tail == "activation argument":
        return keras.Model(inputs, keras.layers.Dense(3, "softmax")(hidden))
    logits = keras.layers.Dense(3)(hidden)
    if tail == "softmax layer":
        return keras.Model(inputs, keras.layers.Softmax()(logits))
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits))


def nested_backbone(kind):
    if kind == "sequential":
        backbone = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dropout(0.1),
            ],
            name="backbone",
        )
    else:
        inner = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu")(inner)
        backbone = keras.Model(inner, hidden, name="backbone")
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(3)(backbone(inputs)))


def trained(model, loss=SPARSE, epochs=1, run_eagerly=True):
    # Eager steps: tracing would cost these tiny models far more than it
    # saves. Traced functions are covered by the `.keras` file test.
    model.compile(
        optimizer="adam",
        loss=loss,
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    x, y = data()
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        y = keras.utils.to_categorical(y, 3)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def assert_same_predictions(source, adopted):
    x, _ = data(n=16, seed=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adopted(x, training=False)),
        keras.ops.convert_to_numpy(source(x, training=False)),
        rtol=0,
        atol=1e-6,
    )


def assert_same_optimizer_state(source, adopted):
    old, new = source.optimizer.variables, adopted.optimizer.variables
    assert [v.name for v in old][:2] == [v.name for v in new][:2]
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def head_layer(model, name):
    return next(
        layer
        for layer in ki.models.growth.iter_layers(model)
        if layer.name == name
    )


def test_sequential_linear_head_same_config_weights_and_predictions():
    source = trained(
        sequential(kernel_regularizer="l2", bias_initializer="ones")
    )
    adopted, name = adopt_model(source, CLASSES)

    assert name == "out"
    head = adopted.get_layer("out")
    assert type(head) is ki.ExpandableDense
    old_config = source.get_layer("out").get_config()
    assert {k: head.get_config()[k] for k in old_config} == old_config
    assert [layer.name for layer in adopted.layers] == [
        layer.name for layer in source.layers
    ]
    for a, b in zip(
        values(source.weights), values(adopted.weights), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert_same_predictions(source, adopted)


@pytest.mark.parametrize(
    "tail", ["activation argument", "softmax layer", "activation layer"]
)
def test_functional_auto_names_softmax_heads(tail):
    source = trained(functional(tail), loss="sparse_categorical_crossentropy")
    dense = [x for x in source.layers if type(x) is keras.layers.Dense][-1]
    adopted, name = adopt_model(source, CLASSES)

    assert name == dense.name and name.startswith("dense")
    assert type(adopted.get_layer(name)) is ki.ExpandableDense
    assert [layer.name for layer in adopted.layers] == [
        layer.name for layer in source.layers
    ]
    assert_same_predictions(source, adopted)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_nested_backbone(kind):
    source = trained(nested_backbone(kind))
    adopted, name = adopt_model(source, CLASSES)

    assert type(adopted.get_layer(name)) is ki.ExpandableDense
    assert adopted.get_layer("backbone") is not source.get_layer("backbone")
    assert_same_predictions(source, adopted)
    assert_same_optimizer_state(source, adopted)


def test_head_inside_nested_model_is_replaced_there():
    classifier = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(3, name="logits")],
        name="classifier",
    )
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    source = trained(keras.Model(inputs, classifier(hidden)))
    adopted, name = adopt_model(source, CLASSES)

    assert name == "logits"
    head = adopted.get_layer("classifier").get_layer("logits")
    assert type(head) is ki.ExpandableDense
    assert_same_predictions(source, adopted)
    assert_same_optimizer_state(source, adopted)
    x, y = data(classes=5)
    ki.expand(adopted, 2)
    adopted.fit(x, y, epochs=1, verbose=0)
    assert adopted.predict(x, verbose=0).shape == (64, 5)


def test_optimizer_state_and_compile_config_carried():
    source = trained(sequential(), epochs=2)
    adopted, _ = adopt_model(source, CLASSES)

    assert adopted.compiled
    assert adopted.get_compile_config() == source.get_compile_config()
    # PyTorch makes a backend subclass of Adam.
    assert isinstance(adopted.optimizer, keras.optimizers.Adam)
    assert type(adopted.optimizer) is type(source.optimizer)
    assert int(adopted.optimizer.iterations) == 8
    assert_same_optimizer_state(source, adopted)
    # The state is the one training uses: both continue identically.
    x, y = data(seed=2)
    for model in (source, adopted):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(
        values(source.weights), values(adopted.weights), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_loss_scale_optimizer_state_carried():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, dtype="float32"),
        ]
    )
    source = trained(model)
    adopted, name = adopt_model(source, CLASSES)

    assert type(adopted.optimizer) is keras.optimizers.LossScaleOptimizer
    assert adopted.get_layer(name).dtype_policy.name == "float32"
    assert adopted.layers[0].dtype_policy.name == "mixed_float16"
    assert_same_optimizer_state(source, adopted)
    assert_same_predictions(source, adopted)


def test_one_hot_loss_expand_then_fit_keeps_old_logits():
    source = trained(
        sequential(), loss=keras.losses.CategoricalCrossentropy(True)
    )
    adopted, _ = adopt_model(source, CLASSES)
    x, y = data(classes=5)
    before = adopted.predict(x, verbose=0)

    ki.expand(adopted, 2)
    after = adopted.predict(x, verbose=0)
    assert_same_logits(after[:, :3], before)
    history = adopted.fit(
        x, keras.utils.to_categorical(y, 5), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    assert int(adopted.optimizer.iterations) == 4 + 2


def test_from_keras_file_compiled(tmp_path):
    source = trained(functional("softmax layer"), epochs=2, run_eagerly=False)
    path = tmp_path / "plain.keras"
    source.save(path)
    adopted, name = adopt_model(path, np.array(CLASSES))

    assert type(adopted.get_layer(name)) is ki.ExpandableDense
    assert adopted.get_compile_config() == source.get_compile_config()
    assert int(adopted.optimizer.iterations) == 8
    assert_same_optimizer_state(source, adopted)
    assert_same_predictions(source, adopted)
    ki.expand(adopted, 1)
    x, y = data(classes=4)
    adopted.fit(x, y, epochs=1, verbose=0)
    adopted.save(tmp_path / "adopted.keras")
    reloaded = keras.saving.load_model(tmp_path / "adopted.keras")
    assert type(reloaded.get_layer(name)) is ki.ExpandableDense
    assert int(reloaded.optimizer.iterations) == 8 + 2
    assert_same_predictions(adopted, reloaded)


def test_uncompiled_stays_uncompiled(tmp_path):
    source = sequential()
    adopted, _ = adopt_model(source, CLASSES)
    assert not adopted.compiled
    assert_same_predictions(source, adopted)

    path = str(tmp_path / "uncompiled.keras")
    source.save(path)
    loaded, _ = adopt_model(path, CLASSES)
    assert not loaded.compiled
    assert getattr(loaded, "optimizer", None) is None
    assert_same_predictions(source, loaded)


def test_source_model_not_mutated():
    source = trained(sequential())
    weights = values(source.variables)
    state = values(source.optimizer.variables)
    config = source.get_config()
    compile_config = source.get_compile_config()
    x, _ = data(n=16, seed=1)
    predictions = source.predict(x, verbose=0)

    adopted, _ = adopt_model(source, CLASSES)
    ki.expand(adopted, 2)

    assert type(source.get_layer("out")) is keras.layers.Dense
    assert source.get_config() == config
    assert source.get_compile_config() == compile_config
    for a, b in zip(weights, values(source.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(state, values(source.optimizer.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(source.predict(x, verbose=0), predictions)
    assert not set(map(id, source.weights)) & set(map(id, adopted.weights))


def test_expandable_head_is_copied_as_it_is():
    source = keras.Sequential(
        [keras.Input((8,)), ki.ExpandableDense(3, name="head")]
    )
    adopted, name = adopt_model(source, CLASSES)
    assert name == "head"
    assert adopted.get_layer("head") is not source.get_layer("head")
    assert_same_predictions(source, adopted)


def test_head_argument():
    source = functional("softmax layer")
    dense = [x for x in source.layers if type(x) is keras.layers.Dense]
    assert adopt_model(source, CLASSES, head=dense[-1].name)[1] == (
        dense[-1].name
    )
    assert adopt_model(source, CLASSES, head=dense[-1])[1] == dense[-1].name
    with pytest.raises(ValueError, match="does not produce the output"):
        adopt_model(source, CLASSES, head=dense[0].name)
    with pytest.raises(ValueError, match="No layer named 'nope'"):
        adopt_model(source, CLASSES, head="nope")
    with pytest.raises(TypeError, match="is a `Softmax`"):
        adopt_model(source, CLASSES, head=source.layers[-1].name)
    with pytest.raises(ValueError, match="not part of model"):
        adopt_model(source, CLASSES, head=keras.layers.Dense(3))
    with pytest.raises(TypeError, match="layer name, a layer or `None`"):
        adopt_model(source, CLASSES, head=3)


@pytest.mark.parametrize(
    "classes, error, message",
    [
        (["a", "b"], ValueError, "which has 3 units. Received 2 names"),
        (["a", "b", "c", "d"], ValueError, "Received 4 names"),
        (["a", "b", "a"], ValueError, r"unique class names.*\['a'\]"),
        (np.array([1, 2, 1]), ValueError, "unique class names"),
        ("abc", TypeError, "list, tuple or 1-D NumPy array"),
        ({"a", "b", "c"}, TypeError, "list, tuple or 1-D NumPy array"),
        (None, TypeError, "list, tuple or 1-D NumPy array"),
        (np.zeros((3, 1)), ValueError, "Expected `classes` to be 1-D"),
        ([["a"], ["b"], ["c"]], TypeError, "hashable class names"),
    ],
)
def test_classes_refused(classes, error, message):
    with pytest.raises(error, match=message):
        adopt_model(sequential(), classes)


def test_classes_of_any_hashable_kind():
    for classes in ((3, 1, 2), np.array(["x", "y", "z"]), [b"a", "a", 0]):
        assert adopt_model(sequential(), classes)[1] == "out"


@pytest.mark.parametrize("softmax_last", [True, False])
@pytest.mark.parametrize(
    "kind",
    [keras.layers.Reshape, keras.layers.LayerNormalization],
    ids=["reshape", "layer norm"],
)
def test_refuses_other_layers_after_head(kind, softmax_last):
    layer = kind((3, 1)) if kind is keras.layers.Reshape else kind()
    inputs = keras.Input((8,))
    logits = keras.layers.Dense(3, name="logits")(inputs)
    if softmax_last:
        outputs = keras.layers.Softmax()(layer(logits))
    else:
        outputs = layer(keras.layers.Softmax()(logits))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=f"comes from layer '{layer.name}'"):
        adopt_model(model, CLASSES)


def test_width_keeping_layers_may_follow_the_head():
    inputs = keras.Input((8,))
    logits = keras.layers.Dense(3, name="logits")(inputs)
    outputs = keras.layers.Softmax()(keras.layers.Dropout(0.5)(logits))
    model, head = adopt_model(keras.Model(inputs, outputs), CLASSES)
    assert head == "logits"
    assert isinstance(model.get_layer("logits"), ki.ExpandableDense)


def test_layers_shared_with_another_model():
    head = keras.layers.Dense(3, name="shared_head")
    softmax = keras.layers.Softmax(name="shared_softmax")
    first = keras.Input((8,))
    keras.Model(first, softmax(head(first)))  # their first calls
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    source = keras.Model(inputs, softmax(head(hidden)))

    adopted, name = adopt_model(source, CLASSES)
    assert name == "shared_head"
    assert type(adopted.get_layer(name)) is ki.ExpandableDense
    assert_same_predictions(source, adopted)


def test_last_dense_is_the_head_even_after_a_softmax():
    inputs = keras.Input((8,))
    hidden = keras.layers.Softmax()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="last")(hidden))
    assert adopt_model(model, CLASSES)[1] == "last"


def test_refuses_models_it_cannot_adopt():
    with pytest.raises(TypeError, match="`keras.Model` or the path"):
        adopt_model(42, CLASSES)
    with pytest.raises(ValueError, match="not built"):
        adopt_model(keras.Sequential([keras.layers.Dense(3)]), CLASSES)

    inputs = keras.Input((8,))
    two = keras.Model(
        inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(2)(inputs)]
    )
    with pytest.raises(ValueError, match="has 2 outputs"):
        adopt_model(two, CLASSES)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 8), "float32"))
    with pytest.raises(TypeError, match="subclassed model"):
        adopt_model(subclassed, CLASSES)

    class MyDense(keras.layers.Dense):
        pass

    custom = keras.Sequential([keras.Input((8,)), MyDense(3)])
    with pytest.raises(TypeError, match="a subclass of `Dense`"):
        adopt_model(custom, CLASSES)

    lora = sequential()
    lora.get_layer("out").enable_lora(2)
    with pytest.raises(ValueError, match="LoRA enabled"):
        adopt_model(lora, CLASSES)

    quantized = sequential()
    quantized.get_layer("out").quantize("int8")
    with pytest.raises(ValueError, match="quantized"):
        adopt_model(quantized, CLASSES)


def test_refuses_compile_config_it_cannot_rebuild():
    source = sequential()
    source.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(p))
    with pytest.warns(UserWarning, match="lambda"):
        with pytest.raises(ValueError, match="cannot be rebuilt"):
            adopt_model(source, CLASSES)


def test_refuses_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="to be a `.keras` file"):
        adopt_model(str(tmp_path / "model.h5"), CLASSES)
    with pytest.raises(ValueError, match="File not found"):
        adopt_model(tmp_path / "missing.keras", CLASSES)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a zip file"):
        adopt_model(garbage, CLASSES)
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="Keras could not load .*empty"):
        adopt_model(empty, CLASSES)


def _saved_classifier(tmp_path):
    """A plain Keras classifier on 3 of 4 classes, trained and saved."""
    x, y = data(n=96, classes=4, seed=1)
    old = y < 3
    model = sequential("softmax")
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x[old], y[old], epochs=2, verbose=0)
    path = tmp_path / "classifier.keras"
    model.save(path)
    return model, path, (x, y)


def test_incremental_model_adopt_then_a_stage(tmp_path):
    source, path, (x, y) = _saved_classifier(tmp_path)
    names = np.array(["cat", "dog", "bird", "fish"])
    run = tmp_path / "run" / "stages.keras"
    model, inc = ki.IncrementalModel.adopt(
        path,
        classes=names[:3],
        strategy="replay",
        memory_size=12,
        checkpoint=run,
        evaluation=(x, names[y]),
    )
    assert inc.classes_ == ["cat", "dog", "bird"]
    assert inc.stage_ == 1 and inc.memory_size == 12
    assert inc.strategy.name == "replay"
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), source.predict(x, verbose=0)
    )
    assert not run.exists()  # adopting writes nothing
    old = y < 3
    assert inc.remember(x[old], names[y[old]]) == 12
    assert np.bincount(inc.memory.samples()[1]).tolist() == [4, 4, 4]
    xs, ys = inc.prepare(x[~old], names[y[~old]])
    assert len(ys) == int((~old).sum()) + 12
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert inc.classes_ == ["cat", "dog", "bird", "fish"]
    assert model.get_layer("out").units == 4
    assert inc.stage_classes_ == [[0, 1, 2], [3]]
    # The adopted model counts as stage 1 of the accuracy matrix.
    assert np.asarray(inc.metrics()["accuracy_matrix"]).shape == (2, 2)
    restored, again = ki.IncrementalModel.restore(run)
    assert again.classes_ == inc.classes_ and again.stage_ == 2
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_incremental_model_adopt_refusals_write_nothing(tmp_path):
    source, path, _ = _saved_classifier(tmp_path)
    run = tmp_path / "run" / "stages.keras"
    with pytest.raises(ValueError, match="one name in `classes` per output"):
        ki.IncrementalModel.adopt(path, ["a", "b"], checkpoint=run)
    with pytest.raises(ValueError, match="unique class names"):
        ki.IncrementalModel.adopt(source, ["a", "b", "a"], checkpoint=run)
    with pytest.raises(TypeError, match="model="):
        ki.IncrementalModel.adopt(source, ["a", "b", "c"], model=source)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ki.IncrementalModel.adopt(source, ["a", "b", "c"], memory=3)
    normed = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(3), keras.layers.Normalization()]
    )
    with pytest.raises(ValueError, match="comes from layer"):
        ki.IncrementalModel.adopt(normed, ["a", "b", "c"], checkpoint=run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.keras"]


def test_a_layer_sized_by_the_head_is_refused_before_training():
    x, y = data()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            ki.ExpandableDense(2, name="head"),
            keras.layers.Dense(4, name="after"),
        ]
    )
    model.compile(optimizer="adam", loss=SPARSE)
    with pytest.raises(ValueError, match="Layer 'after' .* follows"):
        ki.IncrementalModel(model=model)
    inc = ki.IncrementalModel()
    xs, ys = inc.prepare(x, y)
    weights = values(model.weights)
    with pytest.raises(ValueError, match="Layer 'after' .* follows"):
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert model.get_layer("head").units == 2
    for a, b in zip(weights, values(model.weights), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_model_with_two_outputs_is_refused_at_prepare():
    x, y = data()
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(
        inputs,
        [
            ki.ExpandableDense(0, name="head")(hidden),
            keras.layers.Dense(1)(hidden),
        ],
    )
    with pytest.raises(ValueError, match="several outputs"):
        ki.IncrementalModel(model=model)
    inc = ki.IncrementalModel()
    inc.set_model(model)
    with pytest.raises(ValueError, match="several outputs"):
        inc.prepare(x, y)
    assert inc.classes_ == []


class _CountAdopt(ki.strategies.Strategy):
    """Counts the `adopt` hook's calls and the head width it saw."""

    def __init__(self):
        self.calls = []

    def adopt(self, context):
        self.calls.append((context.stage, context.head.units))


def test_the_adopt_hook_runs_once_before_the_first_stage(tmp_path):
    _, path, (x, y) = _saved_classifier(tmp_path)
    spy = _CountAdopt()
    strategy = ki.strategies.Combine(ki.strategies.Replay(), spy)
    model, inc = ki.IncrementalModel.adopt(
        path, classes=[0, 1, 2], strategy=strategy, memory_size=12
    )
    inc.remember(x[y < 3], y[y < 3])
    model.fit(*inc.prepare(x[y == 3], y[y == 3]), verbose=0, callbacks=[inc])
    # Once, before the head grew from the adopted 3 units.
    assert spy.calls == [(1, 3)]
    model.fit(*inc.prepare(x[y < 2], y[y < 2]), verbose=0, callbacks=[inc])
    assert spy.calls == [(1, 3)]
    # A run that trained its own classes never calls it.
    plain = keras.Sequential([keras.Input((8,)), ki.ExpandableDense(0)])
    plain.compile(optimizer="adam", loss=SPARSE)
    own = _CountAdopt()
    run = ki.IncrementalModel(model=plain, strategy=own)
    for classes in ([0, 1], [2, 3]):
        plain.fit(
            *run.prepare(*[a[np.isin(y, classes)] for a in (x, y)]),
            verbose=0,
            callbacks=[run],
        )
    assert own.calls == []


def test_label_smoothing_softens_an_adopted_model_on_the_exemplars(tmp_path):
    source, path, (x, y) = _saved_classifier(tmp_path)
    model, inc = ki.IncrementalModel.adopt(path, [0, 1, 2], memory_size=30)
    inc.remember(x[y < 3], y[y < 3])
    x_old, y_old = inc.memory.samples()
    body = [v for v in model.trainable_variables if "body" in v.path]
    head = [v for v in model.trainable_variables if "body" not in v.path]
    before = values(body)
    logits = ki.strategies.features.logits_of
    spread = float(
        np.std(
            ops.convert_to_numpy(logits(model.get_layer("out"), model(x_old)))
        )
    )
    context = ki.strategies.StageContext(
        model=model,
        head=model.get_layer("out"),
        stage=1,
        old_units=3,
        memory=inc.memory,
        variables=head,  # the body frozen
    )
    ki.strategies.LabelSmoothing(0.5, adopt_epochs=3).adopt(context)
    after = float(
        np.std(
            ops.convert_to_numpy(logits(model.get_layer("out"), model(x_old)))
        )
    )
    assert after < spread
    for a, b in zip(before, values(body), strict=True):
        np.testing.assert_array_equal(a, b)
    unchanged = values(model.weights)
    ki.strategies.LabelSmoothing(0.5, adopt_epochs=0).adopt(context)
    for a, b in zip(unchanged, values(model.weights), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("tail", ["softmax layer", "activation layer"])
def test_strategies_read_logits_through_a_softmax_layer(tail):
    model, head = adopt_model(functional(tail), CLASSES)
    x, _ = data()
    hidden = keras.Model(model.inputs, model.get_layer(head).output)
    logits = ki.strategies.features.logits_of(model.get_layer(head), model(x))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits),
        keras.ops.convert_to_numpy(hidden(x)),
        atol=1e-6,
    )
