"""The analytic head (`strategy="analytic"`): ridge regression on fixed
features from statistics kept over the stages, exact against the joint fit
on all the data seen, with no exemplar; and `RandomFeatures`, the layer that
gives it wide features on raw inputs."""

import io
import warnings
import zipfile

import h5py
import hypothesis
import keras
import numpy as np
import pytest
from hypothesis import strategies as st

import keras_incremental as ki
from keras_incremental.bench.protocol import fit_stage
from keras_incremental.models.heads import find_head
from keras_incremental.saving import checkpoint as checkpoints
from keras_incremental.strategies import ridge
from keras_incremental.strategies.features import feature_extractor

INPUTS = 5
WIDTH = 24
CLASSES = 4


def _data(classes, per_class, seed):
    """Blobs: class `c` around a center of its own in `INPUTS` dimensions."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(CLASSES, INPUTS)) * 2
    y = np.repeat(np.asarray(classes, dtype="int64"), per_class)
    x = centers[y] + rng.normal(size=(len(y), INPUTS))
    return x.astype("float32"), y


def _model(width=WIDTH, body=None):
    layers = [keras.Input((INPUTS,))]
    if body is not None:
        layers.append(body)
    layers += [
        ki.layers.RandomFeatures(width, seed=3, name="features"),
        ki.ExpandableDense(0, name="head"),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _fit(model, inc, x, y, epochs=1, batch_size=8):
    xs, ys = inc.prepare(x, y)
    # Nothing trains, which Keras says: the bench's fit silences it.
    fit_stage(model, xs, ys, inc, epochs, batch_size)


def _joint_ridge(model, inc, x, y, lam):
    """The ridge fit on all of `(x, y)` at `lam`, in float64, on the
    model's features: `(kernel, bias)` in the run's class order."""
    head = find_head(model)
    features = keras.ops.convert_to_numpy(
        feature_extractor(model, head)(x, training=False)
    ).astype("float64")
    h = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    index = {name: i for i, name in enumerate(inc.classes_)}
    onehot = np.zeros((len(y), len(index)))
    onehot[np.arange(len(y)), [index[v] for v in y.tolist()]] = 1.0
    weights = np.linalg.solve(h.T @ h + lam * np.eye(h.shape[1]), h.T @ onehot)
    return weights[:-1], weights[-1]


def _head_weights(model):
    head = find_head(model)
    kernel = keras.ops.convert_to_numpy(head.kernel)[:, : head.units]
    bias = keras.ops.convert_to_numpy(head.bias)[: head.units]
    return kernel, bias


def _assert_relative(actual, expected, tolerance=1e-6):
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error <= tolerance, f"relative error {error:.2e}"


# RandomFeatures -----------------------------------------------------------


def test_random_features_are_fixed_seeded_and_saved(tmp_path):
    layer = ki.layers.RandomFeatures(16, seed=7)
    outputs = layer(np.ones((2, 3), "float32"))
    assert tuple(outputs.shape) == (2, 16)
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 2
    # Drawn with NumPy from the seed: the same on every backend.
    rng = np.random.default_rng(7)
    kernel = rng.normal(scale=1 / np.sqrt(3), size=(3, 16))
    bias = rng.normal(scale=0.1, size=(16,))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.kernel), kernel, rtol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs)[0],
        np.maximum(kernel.sum(axis=0) + bias, 0),
        rtol=1e-5,
        atol=1e-6,
    )
    again = ki.layers.RandomFeatures.from_config(layer.get_config())
    again.build((None, 3))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.kernel),
        keras.ops.convert_to_numpy(layer.kernel),
    )
    model = keras.Sequential([keras.Input((3,)), layer])
    path = tmp_path / "features.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-6,
    )
    assert loaded.layers[0].get_config()["seed"] == 7


def test_random_features_seed_comes_from_the_global_seed():
    keras.utils.set_random_seed(5)
    first = ki.layers.RandomFeatures(4).seed
    keras.utils.set_random_seed(5)
    assert ki.layers.RandomFeatures(4).seed == first


@pytest.mark.parametrize(
    "arguments, kind, text",
    [
        ({"units": 0}, ValueError, "units"),
        ({"units": 2.0}, TypeError, "units"),
        ({"units": 4, "kernel_scale": 0}, ValueError, "kernel_scale"),
        ({"units": 4, "bias_scale": -1}, ValueError, "bias_scale"),
        ({"units": 4, "seed": -1}, ValueError, "seed"),
    ],
)
def test_random_features_refuse_bad_arguments(arguments, kind, text):
    with pytest.raises(kind, match=text):
        ki.layers.RandomFeatures(**arguments)


# The ridge math -----------------------------------------------------------


def _gcv_direct(h, y, lam):
    """GCV from the samples: the hat matrix's trace and residuals."""
    n = len(h)
    hat = h @ np.linalg.solve(h.T @ h + lam * np.eye(h.shape[1]), h.T)
    residual = y - hat @ y
    return n * np.sum(residual**2) / (n - np.trace(hat)) ** 2


def _leave_one_out(h, y, lam):
    errors = 0.0
    for i in range(len(h)):
        keep = np.arange(len(h)) != i
        w = np.linalg.solve(
            h[keep].T @ h[keep] + lam * np.eye(h.shape[1]), h[keep].T @ y[keep]
        )
        errors += np.sum((y[i] - h[i] @ w) ** 2)
    return errors / len(h)


def test_gcv_from_the_statistics_against_a_brute_force_leave_out():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)) + rng.integers(0, 3, size=(40, 1))
    labels = rng.integers(0, 3, size=40)
    statistics = ridge.RidgeStatistics(6)
    statistics.grow(3)
    statistics.add(features, labels)
    h = np.concatenate([features, np.ones((40, 1))], axis=1)
    y = np.eye(3)[labels]
    s, v = np.linalg.eigh(statistics.gram)
    energy = np.sum((v.T @ statistics.cross) ** 2, axis=1)
    scale = np.mean(s)
    lams = scale * 10.0**ridge.GRID_EXPONENTS
    # The statistics' GCV is the samples' GCV, at every lambda of the grid.
    chosen = ridge.gcv_lambda(s, energy, 40)
    direct = [_gcv_direct(h, y, lam) for lam in lams]
    assert chosen == pytest.approx(lams[int(np.argmin(direct))], rel=1e-5)
    # And it estimates the leave-one-out error: the lambda it picks is
    # within 5% of the best leave-one-out error over the grid.
    loo = [_leave_one_out(h, y, lam) for lam in lams]
    assert _leave_one_out(h, y, chosen) <= 1.05 * min(loo)
    # The solve is the ridge fit at that lambda.
    kernel, bias, lam = statistics.solve("auto")
    assert lam == chosen
    weights = np.linalg.solve(h.T @ h + lam * np.eye(7), h.T @ y)
    _assert_relative(kernel, weights[:-1], 1e-9)
    _assert_relative(bias, weights[-1], 1e-9)


def test_statistics_check_refuses_what_samples_cannot_make():
    statistics = ridge.RidgeStatistics(3)
    statistics.grow(2)
    statistics.add(np.ones((4, 3)), np.array([0, 1, 1, 0]))
    statistics.check("ok")
    for change, text in [
        (lambda s: s.gram.__setitem__((0, 1), 5.0), "symmetric"),
        (lambda s: s.gram.__setitem__((0, 0), -1.0), "negative"),
        (lambda s: s.counts.__setitem__(0, 0.5), "whole"),
        (lambda s: s.counts.__setitem__(0, 7.0), "disagree"),
        (lambda s: s.cross.__setitem__((0, 0), np.nan), "non-finite"),
        (
            lambda s: (
                s.gram.__setitem__((0, 1), 40.0),
                s.gram.__setitem__((1, 0), 40.0),
            ),
            "larger than its diagonal",
        ),
        (lambda s: s.cross.__setitem__((0, 0), 30.0), "Q has an entry"),
    ]:
        broken = statistics.copy()
        change(broken)
        with pytest.raises(ValueError, match=text):
            broken.check("crafted")


# The strategy in the staged loop ------------------------------------------


@hypothesis.settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
@hypothesis.given(
    order=st.permutations(range(CLASSES)),
    cuts=st.lists(st.booleans(), min_size=CLASSES - 1, max_size=CLASSES - 1),
    sizes=st.lists(st.integers(3, 20), min_size=CLASSES, max_size=CLASSES),
    epochs=st.integers(1, 2),
    batch_size=st.sampled_from([4, 16]),
)
def test_the_head_is_the_joint_ridge_fit_after_any_stages(
    order, cuts, sizes, epochs, batch_size
):
    """Any class order, one class per stage or all at once, stages of
    uneven size, any epochs and batch size: the joint fit, at lambda 0.1."""
    keras.utils.set_random_seed(0)
    stages, current = [], [order[0]]
    for cut, name in zip(cuts, order[1:], strict=True):
        if cut:
            stages.append(current)
            current = []
        current.append(name)
    stages.append(current)
    model = _model()
    inc = ki.IncrementalModel(
        model=model, strategy=ki.strategies.Analytic(regularization=0.1)
    )
    xs, ys = [], []
    for index, classes in enumerate(stages):
        parts = [_data([c], sizes[c], seed=10 * index + c) for c in classes]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        _fit(model, inc, x, y, epochs=epochs, batch_size=batch_size)
        xs.append(x)
        ys.append(y)
        kernel, bias = _joint_ridge(
            model, inc, np.concatenate(xs), np.concatenate(ys), 0.1
        )
        actual_kernel, actual_bias = _head_weights(model)
        _assert_relative(actual_kernel, kernel)
        _assert_relative(actual_bias, bias)
    assert len(inc.memory) == 0
    # Within a stage, new classes take indices in sorted order.
    assert inc.classes_ == [c for group in stages for c in sorted(group)]


def test_auto_regularization_depends_on_the_data_not_its_stages():
    x, y = _data(range(CLASSES), 15, seed=1)
    heads, lams = [], []
    for stages in ([[0, 1], [2, 3]], [[0], [1], [2], [3]], [[0, 1, 2, 3]]):
        keras.utils.set_random_seed(0)
        model = _model()
        inc = ki.IncrementalModel(model=model, strategy="analytic")
        for classes in stages:
            mask = np.isin(y, classes)
            _fit(model, inc, x[mask], y[mask])
        # In one class order, whatever the stages.
        kernel, bias = _head_weights(model)
        heads.append((kernel, bias))
        lams.append(inc.strategy.lam)
    assert lams[0] == lams[1] == lams[2]
    for kernel, bias in heads[1:]:
        _assert_relative(kernel, heads[0][0])
        _assert_relative(bias, heads[0][1])
    # And it is the joint fit at the lambda it chose.
    joint = _joint_ridge(model, inc, x, y, lams[0])
    _assert_relative(heads[0][0], joint[0])
    # It classifies the blobs.
    test_x, test_y = _data(range(CLASSES), 20, seed=2)
    assert np.mean(inc.decode(inc.predict(test_x)) == test_y) > 0.9


def test_the_body_stays_fixed_and_the_head_gets_no_optimizer_state():
    keras.utils.set_random_seed(0)
    body = keras.layers.Dense(8, activation="relu", name="body")
    model = _model(body=body)
    inc = ki.IncrementalModel(model=model, strategy="analytic")
    x, y = _data([0, 1], 10, seed=0)
    # Before the first stage: nothing of the body may train.
    before = [np.array(w) for w in model.get_layer("body").get_weights()]
    _fit(model, inc, x, y, epochs=2)
    _fit(model, inc, *_data([2], 10, seed=1))
    for old, new in zip(
        before, model.get_layer("body").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    head = find_head(model)
    own = {id(v) for v in head.weights} | {
        id(v) for v in model.get_layer("body").weights
    }
    slots = [v for v in model.optimizer.variables if id(v) in own]
    assert slots == []
    shapes = [tuple(v.shape) for v in model.optimizer.variables]
    assert all(len(shape) < 2 for shape in shapes), shapes


def test_train_first_stage_trains_the_body_once_then_fixes_it():
    keras.utils.set_random_seed(0)
    body = keras.layers.Dense(8, activation="relu", name="body")
    model = _model(body=body)
    strategy = ki.strategies.Analytic(
        regularization=0.1, train_first_stage=True
    )
    inc = ki.IncrementalModel(model=model, strategy=strategy)
    initial = [np.array(w) for w in model.get_layer("body").get_weights()]
    x0, y0 = _data([0, 1], 16, seed=0)
    _fit(model, inc, x0, y0, epochs=3)
    trained = [np.array(w) for w in model.get_layer("body").get_weights()]
    assert any(
        not np.array_equal(a, b) for a, b in zip(initial, trained, strict=True)
    )
    x1, y1 = _data([2, 3], 16, seed=1)
    _fit(model, inc, x1, y1, epochs=3)
    for old, new in zip(
        trained, model.get_layer("body").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    # The first stage's statistics were taken with the trained body: the
    # head is the joint fit on the features of the body as it is now.
    kernel, bias = _joint_ridge(
        model, inc, np.concatenate([x0, x1]), np.concatenate([y0, y1]), 0.1
    )
    _assert_relative(_head_weights(model)[0], kernel)
    _assert_relative(_head_weights(model)[1], bias)


def test_a_stage_from_a_dataset_is_the_same_fit():
    import tensorflow as tf

    x, y = _data([0, 1, 2], 12, seed=4)
    results = []
    for as_dataset in (False, True):
        keras.utils.set_random_seed(0)
        model = _model()
        inc = ki.IncrementalModel(
            model=model, strategy=ki.strategies.Analytic(regularization=0.1)
        )
        if as_dataset:
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
            xs, _ = inc.prepare(data)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The model does not have")
                model.fit(xs, epochs=1, verbose=0, callbacks=[inc])
        else:
            _fit(model, inc, x, y)
        results.append(_head_weights(model))
    _assert_relative(results[1][0], results[0][0])


# Checkpoints ------------------------------------------------------------------


def test_restore_then_a_stage_equals_the_uninterrupted_run(tmp_path):
    stages = [_data([0, 1], 12, 0), _data([2], 9, 1), _data([3], 7, 2)]
    keras.utils.set_random_seed(0)
    model = _model()
    path = tmp_path / "run.keras"
    inc = ki.IncrementalModel(model=model, strategy="analytic", checkpoint=path)
    for x, y in stages[:2]:
        _fit(model, inc, x, y)
    restored, restored_inc = ki.IncrementalModel.restore(path)
    statistics = restored_inc.strategy.statistics
    np.testing.assert_array_equal(statistics.gram, inc.strategy.statistics.gram)
    np.testing.assert_array_equal(statistics.counts, [12, 12, 9])
    assert restored_inc.strategy.lam == inc.strategy.lam
    _fit(model, inc, *stages[2])
    _fit(restored, restored_inc, *stages[2])
    for a, b in zip(_head_weights(model), _head_weights(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    # What the file holds (after the third stage, 4 classes): G's upper
    # triangle, Q, the counts and lambda.
    with zipfile.ZipFile(path) as archive:
        data = archive.read(checkpoints.STRATEGY_ENTRY)
    with h5py.File(io.BytesIO(data), "r") as file:
        shapes = sorted(tuple(file[k].shape) for k in file)
    size = WIDTH + 1
    assert shapes == sorted([(size * (size + 1) // 2,), (size, 4), (4,), (1,)])


def _rewrite_arrays(path, change):
    """The checkpoint at `path` with its strategy arrays passed through
    `change` (a function of a dict by name)."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with h5py.File(io.BytesIO(entries[checkpoints.STRATEGY_ENTRY]), "r") as f:
        arrays = {f[k].attrs["name"]: f[k][()] for k in f}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        for index, (name, value) in enumerate(change(arrays).items()):
            dataset = file.create_dataset(f"array_{index}", data=value)
            dataset.attrs["name"] = name
    entries[checkpoints.STRATEGY_ENTRY] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _broken(name, value):
    def change(arrays):
        return {**arrays, name: value(arrays)}

    return change


@pytest.mark.parametrize(
    "change, text",
    [
        (_broken("gram", lambda a: np.zeros(10**6)), "expected at most"),
        (_broken("gram", lambda a: np.zeros(10)), "shape"),
        (_broken("cross", lambda a: a["cross"][:, :1]), "shape"),
        (_broken("extra", lambda a: np.zeros(3)), "only the strategy's"),
        (_broken("counts", lambda a: a["counts"] + 1), "disagree"),
        (_broken("counts", lambda a: -a["counts"]), "whole non-negative"),
        (_broken("cross", lambda a: a["cross"] * np.nan), "non-finite"),
        (
            lambda a: {k: v for k, v in a.items() if k != "regularization"},
            "lack",
        ),
    ],
)
def test_crafted_statistics_are_refused(tmp_path, change, text):
    keras.utils.set_random_seed(0)
    model = _model()
    path = tmp_path / "run.keras"
    inc = ki.IncrementalModel(model=model, strategy="analytic", checkpoint=path)
    _fit(model, inc, *_data([0, 1], 8, 0))
    _rewrite_arrays(path, change)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=text) as error:
        ki.IncrementalModel.restore(path)
    assert "not valid" in str(error.value) or "at most" in str(error.value)
    assert path.read_bytes() == before


def test_a_bomb_of_statistics_is_refused_before_it_is_read(tmp_path):
    """Statistics of the declared shapes but of zeros, deflated: a member
    that expands far beyond what dense numbers do."""
    keras.utils.set_random_seed(0)
    model = _model(width=600)
    path = tmp_path / "run.keras"
    inc = ki.IncrementalModel(model=model, strategy="analytic", checkpoint=path)
    _fit(model, inc, *_data([0, 1], 8, 0))
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with h5py.File(io.BytesIO(entries[checkpoints.STRATEGY_ENTRY]), "r") as f:
        arrays = {f[k].attrs["name"]: np.zeros_like(f[k][()]) for k in f}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        for index, (name, value) in enumerate(arrays.items()):
            file.create_dataset(f"array_{index}", data=value).attrs["name"] = (
                name
            )
    entries[checkpoints.STRATEGY_ENTRY] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match="times its compressed size"):
        ki.IncrementalModel.restore(path)


def test_a_head_without_bias_is_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((INPUTS,)),
            ki.layers.RandomFeatures(8, seed=0),
            ki.ExpandableDense(0, use_bias=False, name="head"),
        ]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    inc = ki.IncrementalModel(model=model, strategy="analytic")
    with pytest.raises(ValueError, match="use_bias=True"):
        _fit(model, inc, *_data([0, 1], 8, 0))
    assert inc.stage_ == 0


# Adopting a classifier trained elsewhere ----------------------------------


def _trained_classifier():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((INPUTS,)),
            keras.layers.Dense(16, activation="relu", name="body"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = _data([0, 1], 30, seed=0)
    model.fit(x, y, epochs=3, verbose=0)
    return model, x, y


def test_adopt_and_remember_all_old_samples_is_exact():
    source, x_old, y_old = _trained_classifier()
    model, inc = ki.IncrementalModel.adopt(
        source, classes=[0, 1], strategy=ki.strategies.Analytic(0.1)
    )
    body = [np.array(w) for w in model.get_layer("body").get_weights()]
    # No memory: the statistics take every sample and keep none.
    assert inc.remember(x_old, y_old) == 0
    kernel, bias = _joint_ridge(model, inc, x_old, y_old, 0.1)
    _assert_relative(_head_weights(model)[0], kernel)
    x_new, y_new = _data([2, 3], 20, seed=1)
    _fit(model, inc, x_new, y_new)
    kernel, bias = _joint_ridge(
        model,
        inc,
        np.concatenate([x_old, x_new]),
        np.concatenate([y_old, y_new]),
        0.1,
    )
    _assert_relative(_head_weights(model)[0], kernel)
    _assert_relative(_head_weights(model)[1], bias)
    for old, new in zip(
        body, model.get_layer("body").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    assert len(inc.memory) == 0


def test_adopt_without_old_samples_keeps_the_old_columns_and_warns():
    source, _, _ = _trained_classifier()
    model, inc = ki.IncrementalModel.adopt(
        source, classes=[0, 1], strategy="analytic"
    )
    old = [np.array(w) for w in model.get_layer("out").get_weights()]
    xs, ys = inc.prepare(*_data([2], 20, seed=1))
    with pytest.warns(UserWarning, match="no samples of 2 of its 3 classes"):
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    head = model.get_layer("out")
    kernel = keras.ops.convert_to_numpy(head.kernel)
    bias = keras.ops.convert_to_numpy(head.bias)
    np.testing.assert_array_equal(kernel[:, :2], old[0])
    np.testing.assert_array_equal(bias[:2], old[1])


def test_remember_refuses_samples_of_another_shape():
    source, x_old, y_old = _trained_classifier()
    model, inc = ki.IncrementalModel.adopt(
        source, classes=[0, 1], strategy="analytic"
    )
    before = _head_weights(model)
    with pytest.raises(ValueError, match="input shape"):
        inc.remember(x_old[:, :3], y_old)
    with pytest.raises(ValueError, match="unknown classes"):
        inc.remember(x_old, y_old + 5)
    for a, b in zip(before, _head_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (
        inc.strategy.statistics is None or inc.strategy.statistics.samples == 0
    )


def test_analytic_refuses_bad_options():
    with pytest.raises(ValueError, match="regularization"):
        ki.strategies.Analytic(regularization="gcv")
    for value in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="regularization"):
            ki.strategies.Analytic(regularization=value)
    with pytest.raises(TypeError, match="regularization"):
        ki.strategies.Analytic(regularization=True)
    with pytest.raises(TypeError, match="train_first_stage"):
        ki.strategies.Analytic(train_first_stage="yes")
    strategy = ki.strategies.deserialize(
        ki.strategies.serialize(ki.strategies.Analytic(0.5, True))
    )
    assert strategy.get_config() == {
        "regularization": 0.5,
        "train_first_stage": True,
    }


# Serving and distribution -------------------------------------------------


def test_the_solved_head_and_its_features_are_served(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = _model()
    names = ["red", "green", "blue"]
    inc = ki.IncrementalModel(
        model=model, strategy="analytic", export_dir=tmp_path / "serving"
    )
    x, y = _data([0, 1, 2], 12, seed=0)
    _fit(model, inc, x, np.asarray(names)[y])
    version = tmp_path / "serving" / "1"
    loaded = tf.saved_model.load(str(version))
    answer = loaded.signatures["serving_default"](inputs=tf.constant(x))
    served = [c.decode() for c in answer["classes"].numpy()]
    assert served == list(inc.decode(inc.predict(x)))
    np.testing.assert_allclose(
        answer["probabilities"].numpy(),
        keras.ops.convert_to_numpy(keras.ops.softmax(model(x))),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute runs on the TensorFlow backend only",
)
def test_mirrored_run_statistics_from_the_host_pass_equal_one_device():
    import tensorflow as tf

    stages = [_data([0, 1], 21, 0), _data([2, 3], 13, 1)]
    heads = []
    for distributed in (False, True):
        keras.utils.set_random_seed(0)
        if distributed:
            strategy = tf.distribute.MirroredStrategy(
                ["/cpu:0", "/cpu:1"],
                cross_device_ops=tf.distribute.ReductionToOneDevice(),
            )
            assert strategy.num_replicas_in_sync == 2
            with strategy.scope():
                model = _model()
        else:
            model = _model()
        inc = ki.IncrementalModel(
            model=model, strategy=ki.strategies.Analytic(0.1)
        )
        for x, y in stages:
            _fit(model, inc, x, y, batch_size=8)
        heads.append(_head_weights(model))
        statistics = inc.strategy.statistics
        np.testing.assert_array_equal(statistics.counts, [21, 21, 13, 13])
    for single, mirrored in zip(heads[0], heads[1], strict=True):
        _assert_relative(mirrored, single)


DATA_PARALLEL_RUN = """
import json, sys
import keras, numpy as np
sys.path.insert(0, sys.argv[1])
import test_analytic as t
import keras_incremental as ki
from keras_incremental.bench.protocol import fit_stage

heads = []
for distributed in (False, True):
    if distributed:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(
                devices=keras.distribution.list_devices()
            )
        )
    keras.utils.set_random_seed(0)
    model = t._model()
    inc = ki.IncrementalModel(model=model, strategy=ki.strategies.Analytic(0.1))
    for x, y in [t._data([0, 1], 21, 0), t._data([2, 3], 13, 1)]:
        t._fit(model, inc, x, y, batch_size=8)
    heads.append(t._head_weights(model))
    keras.distribution.set_distribution(None)
errors = [
    float(np.max(np.abs(b - a)) / np.max(np.abs(a)))
    for a, b in zip(heads[0], heads[1])
]
print(json.dumps({"devices": len(keras.distribution.list_devices()),
                  "errors": errors}))
"""


@pytest.mark.backend_independent
def test_jax_data_parallel_statistics_from_the_host_pass_equal_one_device():
    import json
    import os
    import pathlib
    import subprocess
    import sys

    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2",
    }
    tests = str(pathlib.Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_RUN, tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert max(report["errors"]) <= 1e-6, report
