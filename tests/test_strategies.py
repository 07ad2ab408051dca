"""Strategies against forgetting, inside ordinary `model.fit`."""

import inspect
import json
import math
import zipfile

import h5py
import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_incremental as ki
from keras_incremental import strategies
from keras_incremental.strategies import EWC
from keras_incremental.strategies import Analytic
from keras_incremental.strategies import BalancedLoss
from keras_incremental.strategies import Combine
from keras_incremental.strategies import Distillation
from keras_incremental.strategies import LabelSmoothing
from keras_incremental.strategies import LogitReplay
from keras_incremental.strategies import Replay
from keras_incremental.strategies import WeightAligning

PLAN = [[0, 1], [2, 3], [4, 5]]


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def make_model(hidden=64):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu", name="body"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run(digits, strategy, memory_size=60, epochs=4, plan=PLAN, **kwargs):
    x, y, x_test, y_test = digits
    model = make_model()
    inc = ki.IncrementalModel(
        strategy=strategy,
        memory_size=memory_size,
        evaluation=(x_test, y_test),
        **kwargs,
    )
    for classes in plan:
        mask = np.isin(y, classes)
        xs, ys = inc.prepare(x[mask], y[mask])
        model.fit(
            xs, ys, epochs=epochs, batch_size=32, verbose=0, callbacks=[inc]
        )
    return model, inc


@pytest.fixture(scope="module")
def finetune_accuracy(digits):
    keras.utils.set_random_seed(0)
    _, inc = run(digits, "finetune")
    return inc.metrics()["final_accuracy"]


@pytest.mark.parametrize(
    "name, margin",
    [
        ("replay", 0.25),
        ("icarl", 0.25),
        ("wa", 0.25),
        ("der++", 0.25),
        ("default", 0.25),
        # LwF and EWC keep little without exemplars in class-incremental
        # learning (their known weakness): they must run and not do worse.
        ("lwf", -0.02),
        ("ewc", -0.02),
    ],
)
def test_each_strategy_beats_finetune(digits, finetune_accuracy, name, margin):
    _, inc = run(digits, name)
    result = inc.metrics()
    # Finetune ends near 1/3: it only knows the last stage's two classes.
    assert finetune_accuracy < 0.45
    assert result["final_accuracy"] > finetune_accuracy + margin
    assert inc.strategy.name == name


def test_distillation_loss_is_base_plus_weighted_term(digits):
    x, y, _, _ = digits
    strategy = Distillation(temperature=2.0, weight=0.7)
    model, inc = run(digits, strategy, memory_size=0, plan=[[0, 1]])
    mask = np.isin(y, [2, 3])
    xs, ys = inc.prepare(x[mask], y[mask])
    teacher_logits = model.predict(xs, verbose=0)
    head_units = model.get_layer("head").units

    seen = {}

    class Capture(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen["weights"] = len(self.model.weights)
            seen["logits"] = self.model.predict_on_batch(xs)

    count_before = len(model.weights)
    history = model.fit(
        xs,
        ys,
        epochs=6,
        batch_size=len(xs),
        verbose=0,
        callbacks=[inc, Capture()],
    )
    # The last step, with the weights the ones before changed: base loss
    # plus 0.7 * distillation from the previous stage's model.
    logits = seen["logits"]
    base = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        ys, logits
    )
    term = _kl_at_temperature(teacher_logits, logits[:, :head_units], 2.0)
    expected = float(base) + 0.7 * float(term)
    assert float(term) > 0.01
    np.testing.assert_allclose(history.history["loss"][-1], expected, rtol=1e-5)
    # The teacher is not tracked by the model, during or after the stage
    # (growth replaces the head's kernel and bias, it adds none).
    assert seen["weights"] == count_before
    assert len(model.weights) == count_before


def _kl_at_temperature(teacher, student, temperature):
    """T**2 * KL(softmax(t / T) || softmax(s / T)), batch mean, in NumPy."""

    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher.astype("float64")), softmax(student)
    kl = np.sum(p * np.log(p / q), axis=-1)
    return temperature**2 * kl.mean()


def test_distillation_term_is_a_divergence_of_softmaxes():
    teacher = np.array([[5.0, -3.0, 1.0], [0.0, 2.0, -1.0]], "float32")
    student = np.array([[-2.0, 4.0, 0.0], [1.0, 1.0, 1.0]], "float32")
    strategy = Distillation(temperature=2.0)
    term = strategy._distillation.compute_loss(teacher, student)
    np.testing.assert_allclose(
        float(term), _kl_at_temperature(teacher, student, 2.0), rtol=1e-5
    )
    same = strategy._distillation.compute_loss(teacher, teacher)
    assert abs(float(same)) < 1e-6


def test_label_smoothing_term_is_cross_entropy_to_uniform():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], "float32")
    head = ki.ExpandableDense(3)
    context = strategies.StageContext(
        model=None, head=head, stage=1, old_units=2
    )
    term = strategies.LabelSmoothing(0.2).loss(context, None, None, logits)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = 0.2 * np.mean(-log_softmax.mean(-1))
    np.testing.assert_allclose(float(term), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="epsilon"):
        strategies.LabelSmoothing(1.5)


def test_teacher_is_not_in_the_saved_file(digits, tmp_path):
    path = tmp_path / "run.keras"
    model, _ = run(digits, "lwf", memory_size=0, epochs=1, checkpoint=str(path))
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    names = []
    with h5py.File(tmp_path / "model.weights.h5") as file:
        file.visit(names.append)
    datasets = [n for n in names if n.startswith("layers/") and "/vars/" in n]
    # body kernel+bias, head kernel+bias: nothing of a teacher.
    assert len(datasets) == 4
    loaded = keras.models.load_model(path)
    # (On JAX the head has spare capacity: an `active_units` variable too.)
    assert len(loaded.weights) == len(model.weights)


def test_weight_aligning_equalises_mean_norms(digits):
    strategy = Combine(Replay(), WeightAligning(), name="replay+wa")
    model, _ = run(digits, strategy, plan=PLAN[:2], epochs=2)
    head = model.get_layer("head")
    kernel = head.kernel.numpy()[:, : head.units]
    norms = np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(norms[2:].mean(), norms[:2].mean(), rtol=1e-5)


def test_icarl_herding_memory_and_nearest_mean_prediction(digits):
    x, y, x_test, y_test = digits
    model, inc = run(digits, "icarl", plan=PLAN[:2])
    assert inc.memory.selection == "herding"
    seen = np.isin(y_test, [0, 1, 2, 3])
    nme = inc.predict(x_test[seen])
    head = model.predict(x_test[seen], verbose=0).argmax(-1)
    # A real classifier of its own: accurate, and not the head's argmax.
    truth = inc.encoder.transform(y_test[seen])
    assert (nme == truth).mean() > 0.8
    assert not np.array_equal(nme, head)


def test_der_plus_plus_replays_stored_logits(digits):
    x, y, _, _ = digits
    model, inc = run(digits, "der++", plan=PLAN[:2], epochs=2)
    assert inc.memory.logits_ is not None
    widths = set(inc.memory.logit_widths_.tolist())
    assert widths == {2, 4}
    xs, (labels, logits, mask) = inc.prepare(
        *[a[np.isin(y, [4])] for a in (x, y)]
    )
    assert logits.shape == mask.shape == (len(xs), 5)
    replayed = mask.sum(1) > 0
    assert replayed.sum() == len(inc.memory)


def test_strategy_and_metrics_survive_the_checkpoint(digits, tmp_path):
    path = tmp_path / "stages.keras"
    strategy = Combine(Replay("herding"), Distillation(weight=0.5), name="mine")
    _, inc = run(digits, strategy, plan=PLAN[:2], epochs=1, checkpoint=path)
    _, restored = ki.IncrementalModel.restore(path)
    assert restored.strategy.name == "mine"
    assert strategies.serialize(restored.strategy) == strategies.serialize(
        strategy
    )
    assert restored.history_ == inc.history_
    assert (
        restored.metrics()["final_accuracy"] == inc.metrics()["final_accuracy"]
    )


def test_report_json_and_plot_per_stage(digits, tmp_path):
    report = tmp_path / "out" / "report.json"
    _, inc = run(digits, "replay", plan=PLAN, epochs=1, report=report)
    written = json.loads(report.read_text())
    assert written["strategy"] == "replay"
    assert len(written["accuracy_matrix"]) == 3
    assert written["final_accuracy"] == pytest.approx(
        inc.metrics()["final_accuracy"]
    )
    assert [h["classes"] for h in written["history"]] == PLAN
    pytest.importorskip("matplotlib")
    assert (tmp_path / "out" / "report.png").stat().st_size > 1000


def test_bad_strategies():
    with pytest.raises(ValueError, match="Received: strategy='sgd'"):
        ki.IncrementalModel(strategy="sgd")
    with pytest.raises(TypeError, match="Received: 3"):
        ki.IncrementalModel(strategy=3)
    with pytest.raises(ValueError, match="temperature"):
        Distillation(temperature=0)
    with pytest.raises(ValueError, match="disagree"):
        Combine(Replay("herding"), Replay("random"))


def test_ewc_state_survives_the_checkpoint(digits, tmp_path):
    path = tmp_path / "ewc.keras"
    _, inc = run(digits, "ewc", plan=PLAN[:2], epochs=1, checkpoint=path)
    state = inc.strategy.get_state()
    assert len(state) == 8  # Fisher and anchor of 2 kernels and 2 biases
    _, restored = ki.IncrementalModel.restore(path)
    again = restored.strategy.get_state()
    assert sorted(again) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(again[name], value)


def test_a_failed_fit_does_not_break_the_next_one(digits):
    x, y, x_test, y_test = digits
    model = make_model()
    inc = ki.IncrementalModel(
        strategy="default", memory_size=40, evaluation=(x_test, y_test)
    )

    class Fail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("interrupted")

    for classes in PLAN[:2]:
        xs, ys = inc.prepare(*[a[np.isin(y, classes)] for a in (x, y)])
        if classes == PLAN[1]:
            with pytest.raises(RuntimeError, match="interrupted"):
                model.fit(xs, ys, epochs=2, verbose=0, callbacks=[inc, Fail()])
            assert "compute_loss" in vars(model)  # left by the failed stage
        model.fit(xs, ys, epochs=3, verbose=0, callbacks=[inc])
    assert "compute_loss" not in vars(model)
    assert inc.stage_classes_ == [[0, 1], [2, 3]]
    assert len(inc.metrics()["accuracy_matrix"]) == 2


def test_bad_sample_shape_changes_nothing(digits):
    _, inc = run(digits, "replay", plan=PLAN[:1], epochs=1)
    classes = list(inc.classes_)
    with pytest.raises(ValueError, match=r"Expected samples shaped like"):
        inc.prepare(np.zeros((4, 8), "float32"), [7, 7, 8, 8])
    assert inc.classes_ == classes


def test_herding_replay_combines_with_logit_replay():
    strategy = Combine(Replay("herding"), strategies.LogitReplay())
    assert strategy.selection == "herding"
    assert strategy.needs_logits and strategy.needs_arrays


# Every numeric constructor argument of every strategy class: the values
# accepted (their ranges as documented) and values just outside them.
NUMBER_ARGUMENTS = [
    (Distillation, "temperature", [1e-9, 2, 2.0, 1e6], [0, 0.0, -1.0]),
    (Distillation, "weight", [0, 0.0, 0.7, 5], [-1e-9, -1]),
    (EWC, "weight", [0, 500, 1000.0], [-1.0]),
    (LogitReplay, "alpha", [0, 0.5, 3], [-0.5]),
    (LabelSmoothing, "epsilon", [0, 0.1, 1, 1.0], [-0.1, 1.5]),
    (BalancedLoss, "power", [0, 0.5, 1], [-0.1, 1.0001]),
]
INTEGER_ARGUMENTS = [
    (EWC, "samples", [1, 200, 2**40], [0, -1]),
    (EWC, "seed", [0, 7, 2**70], [-1]),
    (LabelSmoothing, "adopt_epochs", [0, 5], [-1]),
]
BOOLEAN_ARGUMENTS = [(Analytic, "train_first_stage")]


def _ids(arguments):
    return [f"{cls.__name__}.{name}" for cls, name, *_ in arguments]


def test_every_numeric_or_boolean_strategy_argument_is_listed():
    listed = {
        (cls, name)
        for cls, name, *_ in NUMBER_ARGUMENTS
        + INTEGER_ARGUMENTS
        + BOOLEAN_ARGUMENTS
    }
    found = set()
    for cls in [*strategies.PARTS.values(), Combine]:
        for name, parameter in inspect.signature(cls).parameters.items():
            if isinstance(parameter.default, (bool, int, float)):
                found.add((cls, name))
    assert found == listed
    # The one boolean: `icarl(nme=)`, a factory's (tested below).
    assert inspect.signature(strategies.icarl).parameters["nme"].default


@pytest.mark.parametrize(
    "cls, name, valid, invalid", NUMBER_ARGUMENTS, ids=_ids(NUMBER_ARGUMENTS)
)
@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, np.float64(math.nan)]
)
def test_number_arguments_refuse_non_finite_values(
    cls, name, valid, invalid, value
):
    with pytest.raises(ValueError) as caught:
        cls(**{name: value})
    message = str(caught.value)
    assert f"Received an invalid value for `{name}`, expected a finite" in (
        message
    )
    assert message.endswith(f"Received: {name}={value}"), message


@pytest.mark.parametrize(
    "cls, name, valid, invalid", NUMBER_ARGUMENTS, ids=_ids(NUMBER_ARGUMENTS)
)
@pytest.mark.parametrize("value", [True, False, np.True_])
def test_number_arguments_refuse_bools(cls, name, valid, invalid, value):
    with pytest.raises(TypeError) as caught:
        cls(**{name: value})
    message = str(caught.value)
    assert f"`{name}`" in message
    assert f"Received: {name}={value!r} of type" in message


@pytest.mark.parametrize(
    "cls, name, valid, invalid", INTEGER_ARGUMENTS, ids=_ids(INTEGER_ARGUMENTS)
)
@pytest.mark.parametrize(
    "value", [True, False, np.True_, math.nan, math.inf, -math.inf, 2.0, "3"]
)
def test_integer_arguments_refuse_bools_and_non_integers(
    cls, name, valid, invalid, value
):
    with pytest.raises(TypeError) as caught:
        cls(**{name: value})
    message = str(caught.value)
    assert f"Received an invalid value for `{name}`, expected an integer" in (
        message
    )
    assert f"Received: {name}={value!r} of type" in message


@pytest.mark.parametrize(
    "cls, name, valid, invalid",
    NUMBER_ARGUMENTS + INTEGER_ARGUMENTS,
    ids=_ids(NUMBER_ARGUMENTS + INTEGER_ARGUMENTS),
)
def test_valid_values_are_still_accepted(cls, name, valid, invalid):
    kind = int if (cls, name, valid, invalid) in INTEGER_ARGUMENTS else float
    for value in valid:
        strategy = cls(**{name: value})
        stored = getattr(strategy, name)
        assert type(stored) is kind
        assert stored == value
        assert strategy.get_config()[name] == stored


@pytest.mark.parametrize(
    "cls, name, valid, invalid",
    NUMBER_ARGUMENTS + INTEGER_ARGUMENTS,
    ids=_ids(NUMBER_ARGUMENTS + INTEGER_ARGUMENTS),
)
def test_values_out_of_range_are_still_refused(cls, name, valid, invalid):
    for value in invalid:
        with pytest.raises(ValueError) as caught:
            cls(**{name: value})
        message = str(caught.value)
        assert f"`{name}`" in message
        assert message.endswith(f"Received: {name}={value}"), message


@pytest.mark.parametrize(
    "cls, name, valid, invalid", NUMBER_ARGUMENTS, ids=_ids(NUMBER_ARGUMENTS)
)
def test_numpy_numbers_are_stored_as_python_floats(cls, name, valid, invalid):
    for value in valid:
        given = [np.float64(value), np.float32(value)]
        if float(value).is_integer():
            given += [np.int64(value), np.int32(value)]
        for number in given:
            strategy = cls(**{name: number})
            stored = getattr(strategy, name)
            assert type(stored) is float
            assert stored == float(number)
            config = json.loads(json.dumps(strategy.get_config()))
            assert config[name] == stored


@pytest.mark.parametrize(
    "cls, name, valid, invalid", INTEGER_ARGUMENTS, ids=_ids(INTEGER_ARGUMENTS)
)
def test_numpy_integers_are_stored_as_python_ints(cls, name, valid, invalid):
    for value in valid:
        given = [np.uint64(value)] if value < 2**64 else []
        if value < 2**31:
            given += [np.int64(value), np.int32(value)]
        for number in given:
            strategy = cls(**{name: number})
            stored = getattr(strategy, name)
            assert type(stored) is int
            assert stored == value
            config = json.loads(json.dumps(strategy.get_config()))
            assert config[name] == stored


@pytest.mark.parametrize("cls, name", BOOLEAN_ARGUMENTS)
def test_boolean_arguments_take_bools_only(cls, name):
    for value in (True, False, np.bool_(True)):
        assert getattr(cls(**{name: value}), name) is bool(value)
    for value in (1, 0, "yes", None):
        with pytest.raises(TypeError, match=f"`{name}`"):
            cls(**{name: value})


def test_the_issue_examples():
    for make in (
        lambda: Distillation(weight=math.nan),
        lambda: EWC(weight=math.inf),
        lambda: LogitReplay(alpha=math.nan),
    ):
        with pytest.raises(ValueError, match="expected a finite number >= 0"):
            make()
    with pytest.raises(TypeError, match="Received: weight=True of type bool"):
        Distillation(weight=True)
    strategy = EWC(samples=np.int64(5))
    assert type(strategy.samples) is int and strategy.samples == 5
    json.dumps(strategy.get_config())


def test_icarl_nme_is_a_bool():
    assert isinstance(
        strategies.icarl().parts[-1], strategies.NearestMeanOfExemplars
    )
    for nme, with_nme in [(True, True), (False, False), (np.False_, False)]:
        parts = strategies.icarl(nme=nme).parts
        assert (len(parts) == 3) is with_nme
    for nme in [1, 0, "no", None]:
        with pytest.raises(TypeError, match=f"Received: nme={nme!r} of type"):
            strategies.icarl(nme=nme)


@pytest.mark.parametrize(
    "config, error, pattern",
    [
        ({"weight": math.nan}, ValueError, "Received: weight=nan"),
        ({"weight": math.inf}, ValueError, "Received: weight=inf"),
        ({"temperature": -math.inf}, ValueError, "temperature=-inf"),
        ({"weight": True}, TypeError, "Received: weight=True of type bool"),
        ({"weight": None}, TypeError, "Received: weight=None"),
        ({"weight": "1.0"}, TypeError, "Received: weight='1.0'"),
        ({"wieght": 1.0}, TypeError, "unexpected keyword"),
    ],
)
def test_deserialize_goes_through_the_constructor_checks(
    config, error, pattern
):
    crafted = {
        "name": "mine",
        "parts": [
            {"class": "Replay", "config": {"selection": "random"}},
            {"class": "Distillation", "config": config},
        ],
    }
    with pytest.raises(error, match=pattern) as caught:
        strategies.deserialize(crafted)
    assert "Cannot rebuild strategy part 'Distillation'" in str(caught.value)


def test_deserialize_of_numpy_numbers_gives_json():
    strategy = Combine(
        Distillation(np.float32(2.0), np.int64(1)),
        EWC(np.float64(5.0), np.int64(50), np.uint8(3)),
        LabelSmoothing(np.float64(0.2), np.int32(2)),
        name="numpy",
    )
    written = json.loads(json.dumps(strategies.serialize(strategy)))
    rebuilt = strategies.deserialize(written)
    assert strategies.serialize(rebuilt) == written
    assert written["parts"][1]["config"] == {
        "weight": 5.0,
        "samples": 50,
        "seed": 3,
    }


def _crafted_checkpoint(saved, tmp_path, name, change):
    with zipfile.ZipFile(saved) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    state = json.loads(members["keras_incremental/state.json"])
    change(state)
    members["keras_incremental/state.json"] = json.dumps(state).encode()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def test_restore_refuses_a_crafted_strategy_config(digits, tmp_path):
    saved = tmp_path / "stages.keras"
    run(digits, Distillation(), plan=PLAN[:1], epochs=1, checkpoint=saved)

    def config(state):
        parts = state["settings"]["strategy"]["parts"]
        assert [p["class"] for p in parts] == ["Distillation"]
        return parts[0]["config"]

    def nan_weight(state):
        # Format 1 wrote bare NaN (accuracies), so the file's JSON may
        # hold one anywhere: the constructor refuses it.
        state["format"] = 1
        config(state)["weight"] = math.nan

    def bool_weight(state):
        config(state)["weight"] = True

    path = _crafted_checkpoint(saved, tmp_path, "nan.keras", nan_weight)
    refused = "Cannot rebuild strategy part 'Distillation' from its config"
    with pytest.raises(
        ValueError, match=f"{refused}.*Received: weight=nan"
    ) as caught:
        ki.IncrementalModel.restore(str(path))
    assert "nan.keras" in str(caught.value)  # the file is named
    assert "pass `strategy=` to `restore`" in str(caught.value)
    path = _crafted_checkpoint(saved, tmp_path, "bool.keras", bool_weight)
    with pytest.raises(ValueError, match="weight=True of type bool") as caught:
        ki.IncrementalModel.restore(str(path))
    assert "bool.keras" in str(caught.value)
    assert refused in str(caught.value)
    # The file as written is restored.
    with pytest.warns(UserWarning, match="evaluation"):
        _, inc = ki.IncrementalModel.restore(str(saved))
    assert inc.strategy.get_config() == {"temperature": 2.0, "weight": 1.0}
