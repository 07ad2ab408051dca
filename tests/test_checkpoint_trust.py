"""Checkpoints are untrusted data: crafted files are refused, paths in them
are never obeyed, and a failed write keeps the run where it was."""

import io
import json
import os
import shutil
import subprocess
import time
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
from helpers import values

import keras_incremental as ki
from keras_incremental import compat
from keras_incremental.saving import checkpoint as checkpoints
from keras_incremental.utils.patterns import compile_pattern

STATE = checkpoints.STATE_ENTRY
MEMORY = checkpoints.MEMORY_ENTRY


def _model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="body"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def _stage_data(classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8 * len(classes), 4)).astype("float32")
    return x, list(classes) * 8


def _run(path, stages=(("a", "b"),), **options):
    keras.utils.set_random_seed(0)
    model = _model()
    inc = ki.IncrementalModel(
        model=model, memory_size=10, checkpoint=str(path), **options
    )
    for seed, classes in enumerate(stages):
        xs, ys = inc.prepare(*_stage_data(classes, seed))
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    return model, inc


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A one-stage checkpoint, and its members' bytes."""
    path = tmp_path_factory.mktemp("saved") / "stages.keras"
    _run(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    return path, members


def _rewrite(saved, tmp_path, name="bad.keras", **replaced):
    """A copy of the saved checkpoint with members replaced (None: left
    out)."""
    _, members = saved
    members = {**members, **replaced}
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            if data is not None:
                archive.writestr(member, data)
    return path


def _state(saved):
    return json.loads(saved[1][STATE])


def _with_state(saved, tmp_path, **changes):
    state = _state(saved)
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            state[outer][inner] = value
        else:
            state[key] = value
    return _rewrite(saved, tmp_path, **{STATE: json.dumps(state)})


def _memory_h5(fill):
    """`memory.h5` bytes whose 'memory' group `fill(group)` writes."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        group = file.create_group("memory")
        group.attrs["memory_size"] = 10
        group.attrs["selection"] = "random"
        group.attrs["seed"] = 0
        group.attrs["updates"] = 1
        fill(group)
    return buffer.getvalue()


def _refused(path, *patterns):
    with pytest.raises(ValueError) as caught:
        ki.IncrementalModel.restore(str(path))
    message = str(caught.value)
    assert str(path) in message or os.path.basename(str(path)) in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_round_trip_of_a_good_checkpoint(saved):
    model, inc = ki.IncrementalModel.restore(str(saved[0]))
    assert inc.classes_ == ["a", "b"]
    assert inc.stage_ == 1
    assert model.get_layer("head").units == 2


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"format": 99}, "format 99"),
        ({"format": "1"}, "'format'"),
        ({"stage": "abc"}, "'stage'"),
        ({"stage": -1}, "'stage'"),
        ({"stage": 2}, "history"),
        ({"settings.memory_size": 2.5}, "memory_size"),
        ({"settings.freeze": ["(a+)+b"]}, "unsafe pattern"),
        ({"settings.learning_rates": {"body": -1}}, "learning_rates"),
        ({"settings.strategy": "default"}, "settings.strategy"),
        ({"stage_classes": [[0, 7]]}, "stage_classes"),
        (
            {"history": [{"stage": 0, "row": [3.0], "accuracy": 0.5}]},
            "outside [0, 1]",
        ),
        ({"encoder": {"kind": "str"}}, "encoder"),
        ({"exported": 5}, "exported"),
        ({"settings.seed": -1}, "seed"),
        ({"settings.seed": 2**64}, "seed"),
        ({"history": [{"stage": 0, "row": [0.5]}]}, "'row' and 'accuracy'"),
        ({"stage_classes": [[0]]}, "covers 1 of the 2 classes"),
        ({"surprise": 1}, "unknown keys"),
    ],
)
def test_bad_state_is_refused_naming_the_key(saved, tmp_path, changes, pattern):
    path = _with_state(saved, tmp_path, **changes)
    _refused(path, pattern)


def test_missing_keys_and_bad_json_are_value_errors(saved, tmp_path):
    state = _state(saved)
    del state["settings"]
    _refused(
        _rewrite(saved, tmp_path, **{STATE: json.dumps(state)}), "settings"
    )
    _refused(_rewrite(saved, tmp_path, **{STATE: b"{not json"}), "state.json")
    _refused(_rewrite(saved, tmp_path, **{STATE: b"\xff\xfe"}), "state.json")
    _refused(_rewrite(saved, tmp_path, **{STATE: json.dumps([1, 2])}), "dict")


@pytest.mark.parametrize("classes, units", [(["a"], 1), (["a", "b", "c"], 3)])
def test_class_count_must_match_the_head(saved, tmp_path, classes, units):
    state = _state(saved)
    state["encoder"]["classes"] = classes
    state["stage_classes"] = [list(range(len(classes)))]
    path = _rewrite(saved, tmp_path, **{STATE: json.dumps(state)})
    _refused(path, f"names {units} classes", "2 units")


def test_output_paths_in_the_file_are_not_obeyed(saved, tmp_path):
    """A format-1 state naming a report and an export folder: after restore
    and one more stage, nothing is written there."""
    state = _state(saved)
    state["format"] = 1
    victim = tmp_path / "victim.json"
    victim.write_text("keep me")
    state["settings"].update(
        report=str(victim),
        export_dir=str(tmp_path / "exports"),
        checkpoint=str(tmp_path / "elsewhere.keras"),
    )
    path = _rewrite(saved, tmp_path, **{STATE: json.dumps(state)})
    model, inc = ki.IncrementalModel.restore(str(path))
    assert inc.report is None and inc.export_dir is None
    assert inc.checkpoint == str(path)
    xs, ys = inc.prepare(*_stage_data(["c"], 5))
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "exports").exists()
    assert not (tmp_path / "elsewhere.keras").exists()
    assert ki.IncrementalModel.restore(str(path))[1].stage_ == 2
    assert "report" not in inc.state()["settings"]


def test_restore_writes_where_the_caller_says(saved, tmp_path):
    target = tmp_path / "next.keras"
    report = tmp_path / "report.json"
    model, inc = ki.IncrementalModel.restore(
        str(saved[0]), checkpoint=str(target), report=str(report)
    )
    stamp = saved[0].stat().st_mtime_ns
    xs, ys = inc.prepare(*_stage_data(["c"], 5))
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert saved[0].stat().st_mtime_ns == stamp
    assert ki.IncrementalModel.restore(str(target))[1].classes_ == [
        "a",
        "b",
        "c",
    ]
    assert json.loads(report.read_text())["classes"] == ["a", "b", "c"]


def _memory_case(name):
    x = np.zeros((4, 4), "float32")
    y = np.array([0, 1, 0, 1])
    cases = {
        "lengths": lambda g: (
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=y[:3]),
        ),
        "nan": lambda g: (
            g.create_dataset("x", data=np.full((4, 4), np.nan, "float32")),
            g.create_dataset("y", data=y),
        ),
        "range": lambda g: (
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=np.array([0, 1, 5, 1])),
        ),
        "negative": lambda g: (
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=np.array([0, -1, 0, 1])),
        ),
        "shape": lambda g: (
            g.create_dataset("x", data=np.zeros((4, 5), "float32")),
            g.create_dataset("y", data=y),
        ),
        "budget": lambda g: (
            g.attrs.__setitem__("memory_size", 50),
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=y),
        ),
        "over": lambda g: (
            g.create_dataset("x", data=np.zeros((12, 4), "float32")),
            g.create_dataset("y", data=np.zeros(12, "int64")),
        ),
        "seed": lambda g: (
            g.attrs.__setitem__("seed", -1),
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=y),
        ),
        # 13M columns of logits for a 2-unit head, a few KB compressed.
        "logits": lambda g: (
            g.create_dataset("x", data=x),
            g.create_dataset("y", data=y),
            g.create_dataset(
                "logits",
                shape=(4, 13_000_000),
                dtype="float32",
                chunks=(1, 1_000_000),
                compression="gzip",
            ),
            g.create_dataset("logit_widths", data=np.full(4, 2)),
        ),
    }
    return _memory_h5(cases[name])


@pytest.mark.parametrize(
    "case",
    [
        "lengths",
        "nan",
        "range",
        "negative",
        "shape",
        "budget",
        "over",
        "seed",
        "logits",
    ],
)
def test_inconsistent_memory_is_refused(saved, tmp_path, case):
    path = _rewrite(saved, tmp_path, **{MEMORY: _memory_case(case)})
    _refused(path, "memory")


def test_external_hdf5_data_is_never_read(saved, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(16, dtype="float32").tobytes())

    def fill(group):
        group.create_dataset(
            "x", shape=(4, 4), dtype="float32", external=[(str(secret), 0, 64)]
        )
        group.create_dataset("y", data=np.array([0, 1, 0, 1]))

    path = _rewrite(saved, tmp_path, **{MEMORY: _memory_h5(fill)})
    _refused(path, "external")


def test_a_compressed_memory_bomb_is_refused_before_reading(saved, tmp_path):
    """4M rows declared, a few KB stored, for a budget of 10."""

    def fill(group):
        group.create_dataset(
            "x",
            shape=(4_000_000, 4),
            dtype="float32",
            chunks=(65536, 4),
            compression="gzip",
            fillvalue=0.0,
        )
        group.create_dataset(
            "y",
            shape=(4_000_000,),
            dtype="int64",
            chunks=(65536,),
            compression="gzip",
        )

    data = _memory_h5(fill)
    assert len(data) < 200_000
    path = _rewrite(saved, tmp_path, **{MEMORY: data})
    started = time.perf_counter()
    _refused(path, "memory")
    assert time.perf_counter() - started < 20


def test_strategy_arrays_are_bounded_before_reading(tmp_path):
    path = tmp_path / "ewc.keras"
    _run(path, strategy="ewc")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        for index in range(40):  # 40 copies of the kernel: over 2 per weight
            dataset = file.create_dataset(
                f"array_{index}", data=np.zeros((8, 2), "float32")
            )
            dataset.attrs["name"] = f"0:fisher:{index}"
    bad = _rewrite(
        (path, members),
        tmp_path,
        **{checkpoints.STRATEGY_ENTRY: buffer.getvalue()},
    )
    _refused(bad, "strategy.h5", "two per weight")


def test_restore_with_a_strategy_of_the_same_parts_keeps_its_state(tmp_path):
    path = tmp_path / "ewc.keras"
    _, inc = _run(path, strategy="ewc")
    _, again = ki.IncrementalModel.restore(
        str(path), strategy=ki.strategies.EWC(weight=5.0)
    )
    assert again.strategy.weight == 5.0
    saved = inc.strategy.get_state()
    assert saved and set(again.strategy.get_state()) == set(saved)
    with pytest.warns(UserWarning, match="cannot take"):
        ki.IncrementalModel.restore(str(path), strategy="replay")


def test_damaged_archives_are_value_errors(saved, tmp_path):
    (tmp_path / "text.keras").write_text("not a zip")
    _refused(tmp_path / "text.keras", "zip")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(saved[0].read_bytes()[:2000])
    _refused(truncated)
    # A flipped byte in the stored (uncompressed) state: a CRC error.
    path = _rewrite(saved, tmp_path, name="crc.keras")
    raw = bytearray(path.read_bytes())
    marker = raw.find(b'"stage"')
    raw[marker + 2] ^= 0x01
    path.write_bytes(bytes(raw))
    _refused(path, "state.json")
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    message = _refused(folder)
    assert "No checkpoint" not in message


def test_unsafe_patterns_are_refused_quickly():
    started = time.perf_counter()
    for pattern in [
        "(a+)+$",
        "(a|aa)*b",
        "(x?)+y",
        ".*" * 4 + "z",
        "(?x)(a+) +",
        "(?x)(a+#)\n)+",
        "a{0,20}" * 12 + "b",
    ]:
        with pytest.raises(ValueError):
            compile_pattern(pattern, "Freeze pattern")
    # The worst shapes accepted, on the longest name they are matched
    # against: far from exponential.
    name = "a" * 256
    for pattern in [".*.*.*z", "a*a*a*b", "a{0,99}a{0,99}a{0,99}b", "(a|a)b"]:
        compile_pattern(pattern, "Freeze pattern").fullmatch(name)
    with pytest.raises(ValueError, match="at most 256"):
        compile_pattern("a" * 300, "Freeze pattern")
    assert time.perf_counter() - started < 1
    for pattern in ["body", "block_[0-9]+", "(conv|dense)_.*", r"(?:ab)+"]:
        compile_pattern(pattern, "Freeze pattern")
    with pytest.raises(ValueError, match="repeats a group"):
        ki.IncrementalModel(freeze=["(a+)+$"])
    with pytest.raises(ValueError, match="repeats a group"):
        ki.IncrementalModel(learning_rates={"(a|ab)*": 0.1})


def test_ewc_penalty_survives_restore_of_a_sequential_model(tmp_path):
    path = tmp_path / "ewc.keras"
    model, inc = _run(path, strategy="ewc")
    context = ki.strategies.StageContext(
        model=model, head=model.get_layer("head"), stage=1, old_units=2
    )
    # Move the weights away from their anchors: the penalty is then > 0.
    for variable in model.trainable_variables:
        variable.assign(variable + 0.5)
    before = float(inc.strategy.loss(context, None, None, None))
    assert before > 0
    restored, again = ki.IncrementalModel.restore(str(path))
    for mine, theirs in zip(
        model.trainable_variables, restored.trainable_variables, strict=True
    ):
        theirs.assign(mine)
    context.model, context.head = restored, restored.get_layer("head")
    after = float(again.strategy.loss(context, None, None, None))
    np.testing.assert_allclose(after, before, rtol=1e-6)


def test_restore_warns_about_what_a_file_cannot_hold(tmp_path):
    path = tmp_path / "run.keras"
    x, y = _stage_data(["a", "b"], 0)
    _run(path, freeze=lambda layer: False, evaluation=(x, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ki.IncrementalModel.restore(str(path))
    text = " ".join(str(w.message) for w in caught)
    assert "callable" in text and "evaluation" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, inc = ki.IncrementalModel.restore(
            str(path), freeze=lambda layer: False, evaluation=(x, y)
        )
    assert inc.evaluation is not None and callable(inc.freeze)


@pytest.fixture()
def read_only_folder(tmp_path):
    """A read-only folder: a read-only tmpfs (root), else a 0o555 folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
            capture_output=True,
        )
        mounted = done.returncode == 0
        if not mounted:
            pytest.skip("root without mount: cannot make a read-only folder")
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_unwritable_destinations_fail_before_training(
    tmp_path, read_only_folder
):
    model, inc = _run(tmp_path / "stages.keras")
    weights = values(model.weights)
    for option, value in [
        ("checkpoint", str(read_only_folder / "stages.keras")),
        ("report", str(read_only_folder / "sub" / "report.json")),
        ("export_dir", str(read_only_folder / "exports")),
        ("checkpoint", str(tmp_path / "stages.keras" / "x.keras")),
    ]:
        kept = getattr(inc, option)
        setattr(inc, option, value)
        xs, ys = inc.prepare(*_stage_data(["c"], 3))
        with pytest.raises(ValueError, match=f"`{option}` destination"):
            model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
        setattr(inc, option, kept)
        assert inc.stage_ == 1
        assert model.get_layer("head").units == 2
        for before, after in zip(weights, values(model.weights), strict=True):
            np.testing.assert_array_equal(before, after)


def test_a_failed_checkpoint_write_keeps_the_stage_for_save_checkpoint(
    tmp_path, monkeypatch
):
    path = tmp_path / "stages.keras"
    model, inc = _run(path)
    saved_bytes = path.read_bytes()
    history, memory = list(inc.history_), inc.memory.samples()[1].copy()
    real = checkpoints.write_checkpoint

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "write_checkpoint", full_disk)
    xs, ys = inc.prepare(*_stage_data(["c"], 3))
    with pytest.raises(OSError, match="No space") as caught:
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert "save_checkpoint" in " ".join(caught.value.__notes__)
    assert inc.stage_ == 1 and inc.history_ == history
    np.testing.assert_array_equal(inc.memory.samples()[1], memory)
    assert path.read_bytes() == saved_bytes
    with pytest.raises(ValueError, match="save_checkpoint"):
        inc.prepare(*_stage_data(["d"], 4))
    monkeypatch.setattr(checkpoints, "write_checkpoint", real)
    assert inc.save_checkpoint() == str(path)
    assert inc.stage_ == 2 and inc.classes_ == ["a", "b", "c"]
    assert 2 in inc.memory.samples()[1]
    restored, again = ki.IncrementalModel.restore(str(path))
    assert again.stage_ == 2 and again.classes_ == ["a", "b", "c"]
    np.testing.assert_array_equal(
        restored.predict(xs[:4], verbose=0), model.predict(xs[:4], verbose=0)
    )


def test_save_checkpoint_elsewhere_and_errors(tmp_path):
    model, inc = _run(tmp_path / "stages.keras")
    copy = tmp_path / "copy" / "again.keras"
    assert inc.save_checkpoint(copy) == str(copy)
    assert ki.IncrementalModel.restore(str(copy))[1].classes_ == ["a", "b"]
    with pytest.raises(ValueError, match="ending in '.keras'"):
        inc.save_checkpoint(tmp_path / "x.h5")
    with pytest.raises(ValueError, match="No checkpoint path"):
        ki.IncrementalModel(model=_model()).save_checkpoint()


@pytest.mark.backend_independent
def test_a_failed_export_is_done_before_the_next_stage(tmp_path, monkeypatch):
    from keras_incremental.callbacks import serving_exports
    from keras_incremental.saving.serving import exported_versions

    exports = tmp_path / "exports"
    model, inc = _run(tmp_path / "stages.keras", export_dir=str(exports))
    real = serving_exports.export_for_serving

    def killed(*args, **kwargs):
        raise OSError("export killed")

    monkeypatch.setattr(serving_exports, "export_for_serving", killed)
    xs, ys = inc.prepare(*_stage_data(["c"], 3))
    with pytest.raises(OSError, match="export killed"):
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert inc.stage_ == 2  # the checkpoint was written: the stage counts
    monkeypatch.setattr(serving_exports, "export_for_serving", real)
    probe = xs[:4]
    expected = model.predict(probe, verbose=0)
    xs, ys = inc.prepare(*_stage_data(["d"], 4))
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    versions = exported_versions(str(exports))
    assert sorted(m["stage"] for m in versions.values()) == [1, 2, 3]
    stage_two = next(v for v, m in versions.items() if m["stage"] == 2)
    import tensorflow as tf

    served = tf.saved_model.load(str(exports / str(stage_two)))
    answer = served.signatures["serving_default"](inputs=tf.constant(probe))
    np.testing.assert_allclose(
        answer["probabilities"].numpy(),
        tf.nn.softmax(expected).numpy(),
        atol=1e-5,
    )
    assert inc.export() == str(exports / str(max(versions)))
    assert len(exported_versions(str(exports))) == 3


def _optimizer_number():
    name = keras.optimizers.Optimizer(1.0).name
    return int(name.rsplit("_", 1)[1]) if "_" in name else 0


def test_saves_reuse_keras_reference_objects(tmp_path):
    """Keras 3.15 makes reference objects again on every `model.save` (an
    optimizer whose variables get new names: on TensorFlow about 70 KB of
    native memory a save, never freed) unless the package caches them.
    A Keras that moves that code fails here, loudly."""
    _, inc = _run(tmp_path / "a.keras")
    assert compat.cache_saving_skipsets()
    before = _optimizer_number()
    for name in ("b", "c", "d"):
        inc.save_checkpoint(tmp_path / f"{name}.keras")
    ki.IncrementalModel.restore(str(tmp_path / "d.keras"))
    assert _optimizer_number() == before + 1
