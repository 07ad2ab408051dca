import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_logits
from helpers import values
from sklearn.datasets import load_digits

import keras_incremental as ki

NAMES = np.array(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    ]
)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1200]], y[order[:1200]], x[order[1200:]], y[order[1200:]]


def make_model(loss="sparse", jit_compile=False, units=0):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="body"),
            ki.ExpandableDense(units, name="head"),
        ]
    )
    loss_object = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if loss == "sparse"
        else keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    model.compile(
        optimizer="adam",
        loss=loss_object,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def stage(x, y, classes):
    mask = np.isin(y, classes)
    return x[mask], y[mask]


@pytest.mark.parametrize("kind", ["int", "str"])
def test_contract_loop_with_numpy(digits, kind, tmp_path):
    x, y, x_test, y_test = digits
    model = make_model()
    path = tmp_path / "run" / "stages.keras"
    inc = ki.IncrementalModel(memory_size=60, checkpoint=str(path))
    # Stage 3 brings only old classes; stage 4 mixes old and new.
    plan = [[0, 1], [2, 3], [1, 2], [3, 4, 5]]
    widths = []
    for classes in plan:
        xs, ys = stage(x, y, classes)
        labels = NAMES[ys] if kind == "str" else ys
        x_fit, y_fit = inc.prepare(xs, labels)
        model.fit(
            x_fit, y_fit, epochs=5, batch_size=32, verbose=0, callbacks=[inc]
        )
        widths.append(model.get_layer("head").units)
        assert path.exists()
    assert widths == [2, 4, 4, 6]
    # New classes get the next indices, sorted within their stage.
    expected = [0, 1, 2, 3, 4, 5]
    if kind == "str":
        expected = ["one", "zero", "three", "two", "five", "four"]
    assert inc.classes_ == expected
    xt, yt = stage(x_test, y_test, [0, 1, 2, 3, 4, 5])
    predicted = inc.decode(model.predict(xt, verbose=0).argmax(-1))
    truth = NAMES[yt] if kind == "str" else yt
    correct = np.asarray(predicted) == truth
    # Well above chance (1/6) overall and on the first and last classes:
    # two epochs a stage, on a 32-unit body.
    assert correct.mean() > 0.5
    assert correct[np.isin(yt, [0, 1])].mean() > 0.3
    assert correct[np.isin(yt, [3, 4, 5])].mean() > 0.3
    assert len(inc.memory) == 60
    assert inc.stage_ == 4


def test_contract_loop_with_tf_data(digits):
    x, y, x_test, y_test = digits
    model = make_model()
    inc = ki.IncrementalModel(memory_size=40)
    for classes in ([0, 1], [2, 3]):
        xs, ys = stage(x, y, classes)
        dataset = tf.data.Dataset.from_tensor_slices((xs, NAMES[ys])).batch(16)
        prepared, none = inc.prepare(dataset)
        assert none is None
        model.fit(prepared, epochs=4, verbose=0, callbacks=[inc])
    assert inc.classes_ == ["one", "zero", "three", "two"]
    assert model.get_layer("head").units == 4
    assert len(inc.memory) == 40
    xt, yt = stage(x_test, y_test, [0, 1, 2, 3])
    predicted = inc.decode(model.predict(xt, verbose=0).argmax(-1))
    correct = np.asarray(predicted) == NAMES[yt]
    # Chance: 0.25. Over seeds 0-5 this gave 0.92-0.96, and 0.87-0.93 on
    # the new classes (2 epochs a stage was too few: 0.40-0.86).
    assert correct.mean() > 0.8
    assert correct[np.isin(yt, [2, 3])].mean() > 0.75


def test_tf_data_batches_each_get_exemplars(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, memory_size=40, strategy="replay")
    xs, ys = stage(x, y, [0, 1])
    dataset = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(16)
    first, _ = inc.prepare(dataset)
    model.fit(first, epochs=1, verbose=0, callbacks=[inc])
    exemplars = {row.tobytes() for row in inc.memory.samples()[0]}

    xs, ys = stage(x, y, [2, 3])
    dataset = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(16)
    prepared, _ = inc.prepare(dataset)
    batches = -(-len(ys) // 16)
    per_batch = -(-40 // batches)
    assert prepared.cardinality() == batches
    for _ in range(2):  # every epoch
        seen = set()
        for bx, by in prepared:
            old = np.isin(by.numpy(), [0, 1])
            assert old.sum() == per_batch  # appended to every batch
            seen.update(row.tobytes() for row in bx.numpy()[old])
        assert seen == exemplars  # each exemplar at least once an epoch
    model.fit(prepared, epochs=1, verbose=0, callbacks=[inc])
    assert model.get_layer("head").units == 4


def test_old_logits_unchanged_right_after_growth(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    before = model.predict(x[:50], verbose=0)
    inc.prepare(*stage(x, y, [2, 3, 4]))
    inc.on_train_begin()
    after = model.predict(x[:50], verbose=0)
    assert after.shape == (50, 5)
    assert_same_logits(after[:, :2], before)


def test_categorical_loss_gets_one_hot_of_the_grown_width(digits):
    x, y, _, _ = digits
    model = make_model(loss="categorical")
    inc = ki.IncrementalModel(model=model, memory_size=20)
    for classes, width in (([0, 1], 2), ([2, 3, 4], 5)):
        xs, ys = inc.prepare(*stage(x, y, classes))
        assert ys.shape == (len(xs), width)
        np.testing.assert_array_equal(ys.sum(axis=1), np.ones(len(xs)))
        history = model.fit(xs, ys, epochs=2, verbose=0, callbacks=[inc])
        assert history.history["loss"][-1] < history.history["loss"][0]


def test_without_a_model_prepare_gives_indices():
    inc = ki.IncrementalModel()
    x = np.zeros((4, 3), "float32")
    _, y = inc.prepare(x, ["b", "a", "b", "c"])
    np.testing.assert_array_equal(y, [1, 0, 1, 2])
    assert inc.decode([2, 0]) == ["c", "a"]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_frozen_layer_is_bit_identical_then_trains_when_unfrozen(
    digits, jit_compile
):
    x, y, _, _ = digits
    model = make_model(jit_compile=jit_compile)
    inc = ki.IncrementalModel(model=model)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    body = values(model.get_layer("body").weights)
    head = values(model.get_layer("head").weights)

    inc.freeze = "backbone"
    model.fit(
        *inc.prepare(*stage(x, y, [2, 3])), epochs=1, verbose=0, callbacks=[inc]
    )
    for before, after in zip(
        body, values(model.get_layer("body").weights), strict=True
    ):
        np.testing.assert_array_equal(before, after)
    grown_kernel = model.get_layer("head").kernel.numpy()
    assert not np.allclose(grown_kernel[:, :2], head[0][:, :2])

    inc.freeze = None
    model.fit(
        *inc.prepare(*stage(x, y, [4])), epochs=1, verbose=0, callbacks=[inc]
    )
    assert not np.allclose(model.get_layer("body").kernel.numpy(), body[0])
    assert model.get_layer("body").trainable


def test_freeze_unknown_to_the_optimizer_then_unfrozen(digits):
    """A layer frozen before the optimizer was built joins it later."""
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, freeze=["body"])
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    body = model.get_layer("body").kernel.numpy()
    iterations = int(model.optimizer.iterations.numpy())
    inc.freeze = None
    model.fit(
        *inc.prepare(*stage(x, y, [2])), epochs=1, verbose=0, callbacks=[inc]
    )
    assert not np.allclose(model.get_layer("body").kernel.numpy(), body)
    assert int(model.optimizer.iterations.numpy()) > iterations


def test_a_head_frozen_while_it_grew_trains_when_unfrozen(digits):
    """On JAX and PyTorch growth replaces the head's variables: those made
    while it was frozen must train once it is unfrozen."""
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, freeze=["head"])
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    inc.freeze = None
    xs, ys = inc.prepare(*stage(x, y, [2]))
    inc.on_train_begin()  # grows the head so that the weights can be read
    head = model.get_layer("head")
    assert head.trainable
    trainable = {id(v) for v in model.trainable_variables}
    assert {id(head.kernel), id(head.bias)} <= trainable
    start = keras.ops.convert_to_numpy(head.kernel)[:, :3].copy()
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    kernel = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    assert not np.allclose(kernel[:, :3], start)


def _body_change(digits, multiplier):
    x, y, _, _ = digits
    keras.utils.set_random_seed(1)
    model = make_model()
    inc = ki.IncrementalModel(model=model, learning_rates={"body": multiplier})
    xs, ys = inc.prepare(*stage(x, y, [0, 1, 2]))
    inc.on_train_begin()  # grows the head so that the weights can be read
    start = model.get_layer("body").kernel.numpy()
    model.fit(xs, ys, epochs=1, batch_size=32, verbose=0, callbacks=[inc])
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    return np.abs(model.get_layer("body").kernel.numpy() - start).mean()


def test_body_learning_rate_multiplier_under_adam(digits):
    ratio = _body_change(digits, 1.0) / _body_change(digits, 0.01)
    assert 100 / 3 < ratio < 100 * 3


def test_learning_rates_keep_optimizer_state_across_stages(digits, tmp_path):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    adam = model.optimizer
    iterations = int(adam.iterations.numpy())
    momentum = {v.path: v.numpy() for v in adam.variables if "body" in v.path}
    inc.learning_rates = {"body": 0.1}
    inc.prepare(*stage(x, y, [2]))
    inc.on_train_begin()
    multi = model.optimizer
    assert isinstance(multi, keras.optimizers.MultiOptimizer)
    assert int(multi.iterations.numpy()) == iterations
    carried = {v.name: v.numpy() for v in multi.variables}
    for path, value in momentum.items():
        name = path.split("/")[-1]
        assert any(
            k.endswith(name) and np.array_equal(v, value)
            for k, v in carried.items()
        ), path
    # The multiplier can change between stages without a rebuild.
    model.fit(
        *inc.prepare(*stage(x, y, [2])), epochs=1, verbose=0, callbacks=[inc]
    )
    inc.learning_rates = {"body": 0.5}
    inc.prepare(*stage(x, y, [2]))
    inc.on_train_begin()
    assert model.optimizer is multi
    rates = sorted(
        float(keras.ops.convert_to_numpy(o.learning_rate))
        for o in multi.optimizers
    )
    assert rates == pytest.approx([0.0005, 0.001])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)


RESTORE_CHILD = textwrap.dedent(
    """
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras_incremental as ki
    model, inc = ki.IncrementalModel.restore(sys.argv[1])
    x = np.load(sys.argv[2], allow_pickle=False)
    np.save(sys.argv[3], model.predict(x, verbose=0), allow_pickle=False)
    state = {v.path: v.numpy().tolist() for v in model.optimizer.variables}
    xs, ys = inc.prepare(x[:40], ["new"] * 20 + ["zero"] * 20)
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    print(json.dumps({"classes": inc.classes_, "stage": inc.stage_,
                      "units": model.get_layer("head").units,
                      "state": state}))
    """
)


def test_restore_in_a_fresh_process(digits, tmp_path):
    x, y, x_test, _ = digits
    model = make_model()
    path = str(tmp_path / "stages.keras")
    inc = ki.IncrementalModel(memory_size=30, checkpoint=path)
    for classes in ([0, 1], [2, 3]):
        xs, ys = stage(x, y, classes)
        model.fit(
            *inc.prepare(xs, NAMES[ys]), epochs=1, verbose=0, callbacks=[inc]
        )
    inputs = str(tmp_path / "x.npy")
    outputs = str(tmp_path / "p.npy")
    np.save(inputs, x_test[:64])
    result = subprocess.run(
        [sys.executable, "-c", RESTORE_CHILD, path, inputs, outputs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(
        np.load(outputs), model.predict(x_test[:64], verbose=0)
    )
    assert report["classes"] == inc.classes_ + ["new"]
    assert report["stage"] == 3
    assert report["units"] == 5
    saved = {v.path: v.numpy() for v in model.optimizer.variables}
    assert len(saved) == len(report["state"])
    for (_, mine), theirs in zip(
        saved.items(), report["state"].values(), strict=True
    ):
        np.testing.assert_array_equal(mine, np.asarray(theirs))


KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras
    import keras_incremental as ki
    from keras_incremental.saving import checkpoint
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), ki.ExpandableDense(0, name="head")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    inc = ki.IncrementalModel(memory_size=10, checkpoint=sys.argv[1])
    x = np.random.rand(20, 4).astype("float32")
    model.fit(*inc.prepare(x, ["a", "b"] * 10), verbose=0, callbacks=[inc])
    def stall(memory):
        print("WRITING", flush=True)
        time.sleep(120)
    checkpoint._memory_bytes = stall
    model.fit(*inc.prepare(x, ["c", "d"] * 10), verbose=0, callbacks=[inc])
    """
)


def test_sigkill_while_writing_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "stages.keras"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "WRITING", child.stderr.read()[-3000:]
        partial = [p for p in os.listdir(tmp_path) if p != "stages.keras"]
        assert partial, "the new checkpoint is being written beside the old"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    model, inc = ki.IncrementalModel.restore(str(path))
    assert inc.classes_ == ["a", "b"]
    assert inc.stage_ == 1
    assert model.get_layer("head").units == 2
    with pytest.raises(ValueError, match="damaged zip|not a keras_incremental"):
        leftover = [p for p in tmp_path.iterdir() if p.name != "stages.keras"]
        ki.IncrementalModel.restore(str(leftover[0]))


def _trained_run(digits, tmp_path):
    x, y, _, _ = digits
    model = make_model()
    path = tmp_path / "stages.keras"
    inc = ki.IncrementalModel(model=model, memory_size=20, checkpoint=str(path))
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    return model, inc, path


@pytest.mark.parametrize(
    "x, y, error, pattern",
    [
        (np.zeros((3, 64)), [0, 1], ValueError, "as many labels as samples"),
        (np.zeros((0, 64)), [], ValueError, "empty stage"),
        (np.full((2, 64), np.nan), [0, 1], ValueError, "NaN or infinite"),
        (np.full((2, 64), np.inf), [0, 1], ValueError, "NaN or infinite"),
        (np.zeros((2, 64)), [0, None], ValueError, "None"),
        (np.zeros((2, 64)), [1, "1"], TypeError, "mix"),
        (np.zeros((2, 64)), ["a", "b"], TypeError, ""),
        (np.zeros((2, 64)), [[0.5, 0.5], [1, 0]], ValueError, "one-hot"),
    ],
)
def test_bad_stage_data_changes_nothing(digits, tmp_path, x, y, error, pattern):
    model, inc, path = _trained_run(digits, tmp_path)
    classes = inc.classes_
    weights = values(model.weights)
    memory = inc.memory.samples()[1].copy()
    stamp = path.stat().st_mtime_ns
    with pytest.raises(error, match=pattern):
        inc.prepare(x, y)
    assert inc.classes_ == classes
    for before, after in zip(weights, values(model.weights), strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(inc.memory.samples()[1], memory)
    assert path.stat().st_mtime_ns == stamp
    assert os.listdir(tmp_path) == ["stages.keras"]


def test_bad_options(digits, tmp_path):
    model, inc, _ = _trained_run(digits, tmp_path)
    classes = inc.classes_
    inc.freeze = ["nope"]
    with pytest.raises(ValueError, match="matches no layer"):
        inc.prepare(np.zeros((2, 64)), [5, 6])
    assert inc.classes_ == classes
    inc.freeze = None
    # Options are checked when set: a bad one is refused there, and the run
    # keeps the one it had.
    with pytest.raises(ValueError, match="> 0"):
        inc.learning_rates = {"body": 0.0}
    assert inc.learning_rates is None
    # One changed in place is checked when the next stage is prepared.
    inc.learning_rates = {"body": 0.5}
    inc.learning_rates["body"] = 0.0
    with pytest.raises(ValueError, match="> 0"):
        inc.prepare(np.zeros((2, 64)), [5, 6])
    inc.learning_rates = None
    with pytest.raises(ValueError, match="> 0"):
        ki.IncrementalModel(learning_rates={"body": -1})
    with pytest.raises(ValueError, match="ending in '.keras'"):
        ki.IncrementalModel(checkpoint=str(tmp_path / "stages.h5"))
    with pytest.raises(ValueError, match="no `ExpandableDense`"):
        ki.IncrementalModel(
            model=keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        )
    with pytest.raises(ValueError, match="Unknown strategy"):
        ki.IncrementalModel(strategy="magic")
    assert inc.classes_ == classes


def test_restore_errors(tmp_path):
    with pytest.raises(ValueError, match="No checkpoint"):
        ki.IncrementalModel.restore(str(tmp_path / "missing.keras"))
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(plain)
    with pytest.raises(ValueError, match="not a keras_incremental"):
        ki.IncrementalModel.restore(str(plain))


def test_tf_data_with_batched_one_hot_labels(digits):
    x, y, _, _ = digits
    xs, ys = stage(x, y, [0, 1, 2])
    one_hot = np.eye(3, dtype="float32")[ys]
    dataset = tf.data.Dataset.from_tensor_slices((xs, one_hot)).batch(32)
    model = make_model(loss="categorical")
    inc = ki.IncrementalModel(model=model, strategy="replay", memory_size=30)
    prepared, _ = inc.prepare(dataset)
    assert inc.classes_ == [0, 1, 2]
    model.fit(prepared, epochs=1, verbose=0, callbacks=[inc])
    assert model.get_layer("head").units == 3
    assert np.bincount(inc.memory.samples()[1]).tolist() == [10, 10, 10]


def test_bytes_labels_are_exported_with_their_names(digits, tmp_path):
    x, y, _, _ = digits
    xs, ys = stage(x, y, [0, 1])
    labels = [NAMES[c].encode() for c in ys]
    model = make_model()
    inc = ki.IncrementalModel(
        strategy="replay",
        checkpoint=tmp_path / "run.keras",
        export_dir=tmp_path / "serving",
    )
    model.fit(*inc.prepare(xs, labels), epochs=1, verbose=0, callbacks=[inc])
    assert (tmp_path / "run.keras").is_file()
    assert os.listdir(tmp_path / "serving") == ["1"]
