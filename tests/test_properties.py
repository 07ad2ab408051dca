"""Property-based tests: random sequences of stage operations keep the
package's invariants.

Two `hypothesis.stateful` machines drive the package:

- `ExpandMachine`: a plain compiled model, grown with `keras_incremental.
  expand` between `fit`s, saved and loaded.
- `IncrementalMachine`: a run of `IncrementalModel` (one subclass per
  strategy: `"replay"` with string labels, `"default"` with integer ones)
  through random sequences of `prepare`, `fit`, `remember`,
  `save_checkpoint`, `restore` and `transfer_weights`.

They check: old logits unchanged by growth (plain `expand`, and the head's
growth at a stage's start), `classes_` append-only, head width == number of
classes, the exemplar memory within budget, class-balanced (an exact model
of `ExemplarMemory`'s quota rule) and holding each sample under its own
class, exact checkpoint round trips, and weight transfer into a fresh model.

Everything is seeded and `derandomize=True`: the same sequences run in every
CI job. Each test also asserts that every operation (and the cases that
matter, such as a head growing after training) ran, so that a change of the
drawn sequences cannot leave a property silently untested.
"""

import collections
import os
import re
import tempfile

import keras
import numpy as np
import pytest
from helpers import assert_same_logits
from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import rule
from hypothesis.stateful import run_state_machine_as_test

import keras_incremental as ki

FEATURES = 8
HIDDEN = 16
# Inputs whose outputs are compared before and after each step.
PROBE = np.random.default_rng(1234).normal(size=(12, FEATURES)).astype("f4")
# Logits of the old columns after growth: the same weights and inputs, but a
# wider matmul may block its sums differently (seen: 2.4e-7, one float32 ulp).
ATOL = 1e-6


_SEED = st.integers(0, 2**16)

# Shrinking re-runs whole sequences of `fit`s: minutes. Set
# KERAS_INCREMENTAL_SHRINK=1 to get a minimal failing sequence; by default a
# failure reports the sequence as generated.
_PHASES = [Phase.explicit, Phase.generate] + (
    [Phase.shrink] if os.environ.get("KERAS_INCREMENTAL_SHRINK") else []
)


def _settings(max_examples, steps):
    return settings(
        derandomize=True,
        phases=_PHASES,
        deadline=None,
        max_examples=max_examples,
        stateful_step_count=steps,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=False,
    )


def build_model(units, compiled=True):
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu", name="body"),
            ki.ExpandableDense(units, name="head"),
        ]
    )
    if compiled:
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    return model


def logits(model, x=PROBE):
    """The model's outputs, from an eager call (no traced function)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def head_of(model):
    return model.get_layer("head")


def head_slots(model):
    """The optimizer's slots of the head's kernel and bias, by name."""
    optimizer = model.optimizer
    if optimizer is None or not optimizer.built:
        return {}
    return {
        v.name: np.array(v.numpy())
        for v in optimizer.variables
        if _HEAD_SLOT.search(v.name)
    }


# Adam's slot names: `<model>_head_kernel_momentum`, or without the model's
# name after `load_model`.
_HEAD_SLOT = re.compile(r"(^|_)head_(kernel|bias)_")


def iterations(model):
    return int(model.optimizer.iterations.numpy())


def expected_counts(stored, new, memory_size):
    """What an `ExemplarMemory` of `memory_size` that held `stored` keeps
    after receiving `new` (dicts class index -> sample count).

    The budget is split over the classes with samples (stored or new),
    sorted by index: each gets `memory_size // k`, the first
    `memory_size % k` of them one more, and keeps `min(available, quota)`.

    Returns:
        `(counts, short)`: the count per class index (classes keeping none
        left out), and the set of classes that had fewer samples than their
        quota.
    """
    pool = collections.Counter(stored)
    pool.update(new)
    classes = sorted(c for c, n in pool.items() if n > 0)
    share, extra = divmod(memory_size, len(classes))
    quotas = {c: share + (1 if i < extra else 0) for i, c in enumerate(classes)}
    counts = {c: min(pool[c], quotas[c]) for c in classes}
    short = {c for c in classes if pool[c] < quotas[c]}
    return {c: n for c, n in counts.items() if n}, short


# --------------------------------------------------------------------------
# Growth of a plain model with `keras_incremental.expand`.


class _Rounds(RuleBasedStateMachine):
    """A machine whose one rule runs an operation drawn among those the
    current round has not run yet.

    One rule that draws the operation, rather than a rule per operation,
    and rounds in which each operation runs once, in a drawn order: the few
    sequences affordable here (each `fit` costs a fraction of a second, each
    new model a trace) then try every operation, which neither uniform draws
    nor Hypothesis's swarm testing (a random half of the rules turned off in
    each sequence) ensure. Operation `op` is the method `op`, taking `data`.
    """

    OPERATIONS = ()
    ran = None  # a Counter per machine class: operations and cases run

    def __init__(self):
        super().__init__()
        keras.utils.set_random_seed(0)
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name
        self.files = 0
        self.round = []

    def teardown(self):
        self._tmp.cleanup()

    def _path(self, kind):
        self.files += 1
        return os.path.join(self.dir, f"{kind}{self.files}.keras")

    @rule(data=st.data())
    def step(self, data):
        if not self.round:
            self.round = list(self.OPERATIONS)
        op = data.draw(st.sampled_from(self.round), label="operation")
        self.round.remove(op)
        self.ran[op] += 1
        getattr(self, op)(data)


class ExpandMachine(_Rounds):
    """A compiled model grown with `expand` between `fit`s and reloads."""

    OPERATIONS = ("expand", "fit", "save_and_load")
    ran = collections.Counter()

    @initialize(units=st.integers(0, 3))
    def build(self, units):
        self.model = build_model(units)

    @property
    def units(self):
        return head_of(self.model).units

    def expand(self, data, n=None):
        if n is None:
            n = data.draw(st.integers(0, 3), label="units")
        model, head = self.model, head_of(self.model)
        old = head.units
        if old and n and model.optimizer.built:
            self.ran["grow trained"] += 1
        before = logits(model) if old else None
        kernel, bias = (
            np.array(head.kernel.numpy()),
            np.array(head.bias.numpy()),
        )
        slots = head_slots(model)
        steps = iterations(model)

        grown = ki.expand(model, n)

        assert grown is head
        assert head.units == old + n
        assert head.get_config()["units"] == old + n
        np.testing.assert_array_equal(head.kernel.numpy()[:, :old], kernel)
        np.testing.assert_array_equal(head.bias.numpy()[:old], bias)
        after = logits(model)
        assert after.shape == (len(PROBE), old + n)
        if old:
            np.testing.assert_allclose(
                after[:, :old], before, rtol=ATOL, atol=ATOL
            )
        grown_slots = head_slots(model)
        assert grown_slots.keys() == slots.keys()
        for name, value in slots.items():
            new = grown_slots[name]
            assert new.shape[-1] == old + n, name
            np.testing.assert_array_equal(new[..., :old], value, err_msg=name)
            assert not new[..., old:].any(), name
        assert iterations(model) == steps
        # The compiled predict function must follow the new width.
        predicted = model.predict(PROBE, verbose=0)
        np.testing.assert_allclose(predicted, after, rtol=1e-5, atol=1e-6)

    def fit(self, data):
        if not self.units:
            self.expand(data, data.draw(st.integers(1, 3), label="units"))
        rng = np.random.default_rng(data.draw(_SEED, label="seed"))
        x = rng.normal(size=(16, FEATURES)).astype("float32")
        y = rng.integers(0, self.units, size=16)
        steps = iterations(self.model)
        self.model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        assert iterations(self.model) == steps + 1
        assert self.model.predict(PROBE, verbose=0).shape == (
            len(PROBE),
            self.units,
        )

    def save_and_load(self, data):
        path = self._path("model")
        self.model.save(path)
        loaded = keras.models.load_model(path)
        assert head_of(loaded).units == self.units
        np.testing.assert_array_equal(logits(loaded), logits(self.model))
        if self.model.optimizer.built:
            for mine, theirs in zip(
                self.model.optimizer.variables,
                loaded.optimizer.variables,
                strict=True,
            ):
                np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        else:
            # Never trained: Keras saves no slots and starts afresh.
            assert iterations(loaded) == 0
        # Go on with the loaded model: it must grow and train like the first.
        self.model = loaded


# Saving a model compiled but never trained: Keras warns that the loaded
# optimizer (built on load) has more variables than the saved one (none).
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_expand_keeps_old_outputs_and_optimizer_state():
    ExpandMachine.ran.clear()
    run_state_machine_as_test(ExpandMachine, settings=_settings(3, 8))
    # Every operation ran, and a head grew with trained optimizer slots.
    assert set(ExpandMachine.ran) == {
        *ExpandMachine.OPERATIONS,
        "grow trained",
    }, ExpandMachine.ran


# --------------------------------------------------------------------------
# Staged training with `IncrementalModel`.


class _Probe(keras.callbacks.Callback):
    """Listed after the `IncrementalModel`: sees the head right after the
    stage's growth, before any training step."""

    def on_train_begin(self, logs=None):
        head = head_of(self.model)
        self.units = head.units
        self.kernel = np.array(head.kernel.numpy())
        self.bias = np.array(head.bias.numpy())
        self.logits = logits(self.model)


def stage_arrays(labels, counts, seed, pool):
    """`counts[i]` samples of class `labels[i]`; a sample's values depend on
    its label, so that no two classes ever share one."""
    xs, ys = [], []
    for label, count in zip(labels, counts, strict=True):
        rng = np.random.default_rng([seed, pool.index(label)])
        xs.append(rng.normal(size=(count, FEATURES)).astype("float32"))
        ys.extend([label] * count)
    return np.concatenate(xs), np.asarray(ys)


# (pool position, sample count) for 1 to 3 distinct classes.
_STAGE = st.lists(
    st.tuples(st.integers(0, 7), st.integers(1, 8)),
    min_size=1,
    max_size=3,
    unique_by=lambda item: item[0],
)


# "fit": the pending `prepare`'s stage, or a new one (prepare, then fit).
OPERATIONS = ("fit", "prepare", "remember", "save", "restore", "transfer")


class IncrementalMachine(_Rounds):
    """An `IncrementalModel` run through random stage operations.

    The machine keeps a model of what the run must hold: the classes of the
    finished stages (`committed`), the stage number, the memory's count per
    class (`counts`) and, for every checkpoint written, a snapshot of the
    run when it was written.
    """

    STRATEGY = None  # set by the subclasses
    POOL = None
    OPERATIONS = OPERATIONS

    def __init__(self):
        super().__init__()
        self.model = self.inc = None
        self.committed = []
        self.stage = 0
        self.counts = {}
        self.short = set()
        self.pending = None
        # Every sample given to the run, by its bytes -> its class names.
        self.given = collections.defaultdict(set)
        self.snapshots = {}
        self.restored = False

    def _give(self, x, y):
        for row, label in zip(x, y.tolist(), strict=True):
            self.given[row.tobytes()].add(label)

    @initialize(
        memory_size=st.sampled_from([5, 12]),
        stage=_STAGE,
        seed=st.integers(0, 2**16),
    )
    def start(self, memory_size, stage, seed):
        """A run with its first stage trained: every sequence pays for a
        first `fit` (a trace) anyway, and most rules need one."""
        self.model = build_model(0)
        self.inc = ki.IncrementalModel(
            model=self.model,
            strategy=self.STRATEGY,
            memory_size=memory_size,
            checkpoint=os.path.join(self.dir, "stages.keras"),
        )
        self._prepare(stage, seed)
        self._fit()

    # -- operations: draw their arguments -----------------------------------

    def fit(self, data):
        """The pending `prepare`'s stage, or a new one."""
        if self.pending is None:
            self.prepare(data)
        self._fit()

    def prepare(self, data):
        """One `prepare`, or two: the second replaces the first."""
        for _ in range(data.draw(st.integers(1, 2), label="prepares")):
            self._prepare(data.draw(_STAGE, label="stage"), data.draw(_SEED))

    def remember(self, data):
        self._remember(data.draw(_STAGE, label="stage"), data.draw(_SEED))

    def save(self, data):
        self._save(data.draw(st.booleans(), label="own path"))

    def restore(self, data):
        paths = sorted(self.snapshots)
        self._restore(data.draw(st.sampled_from(paths), label="path"))

    def transfer(self, data):
        self._transfer(
            data.draw(st.integers(0, 2), label="extra units"),
            data.draw(st.booleans(), label="by class name"),
            data.draw(_SEED),
        )

    # -- operations: run and check ------------------------------------------

    def _prepare(self, stage, seed):
        if self.pending is not None:
            self.ran["prepare again"] += 1
        labels = [self.POOL[i] for i, _ in stage]
        x, y = stage_arrays(labels, [n for _, n in stage], seed, self.POOL)
        self._give(x, y)
        memory = len(self.inc.memory)

        xs, ys = self.inc.prepare(x, y)

        # Append-only; a second `prepare` before `fit` takes back what the
        # first added.
        classes = self.inc.classes_
        assert classes[: len(self.committed)] == self.committed
        added = classes[len(self.committed) :]
        assert len(set(added)) == len(added)
        assert set(added) == set(labels) - set(self.committed)
        # The stage and every exemplar, each with its own label.
        assert len(xs) == len(x) + memory
        assert len(ys) == len(xs)
        names = self.inc.decode(ys)
        for row, name in zip(xs, names, strict=True):
            assert name in self.given[row.tobytes()], name
        indices = {c: i for i, c in enumerate(self.inc.classes_)}
        self.pending = (
            xs,
            ys,
            collections.Counter(indices[label] for label in y.tolist()),
        )

    def _fit(self):
        model, inc = self.model, self.inc
        xs, ys, stage_counts = self.pending
        old = head_of(model).units
        assert old == len(self.committed)
        before = logits(model) if old else None
        # The units' columns (a head with spare capacity has more).
        kernel = np.array(head_of(model).kernel.numpy())[:, :old]
        bias = np.array(head_of(model).bias.numpy())[:old]
        classes = inc.classes_
        probe = _Probe()

        model.fit(
            xs, ys, epochs=1, batch_size=256, verbose=0, callbacks=[inc, probe]
        )

        # Growth at the stage's start: old columns unchanged.
        if old and len(classes) > old:
            self.ran["grow"] += 1
        if self.restored:
            self.ran["fit after restore"] += 1
            self.restored = False
        assert probe.units == len(classes)
        np.testing.assert_array_equal(probe.kernel[:, :old], kernel)
        np.testing.assert_array_equal(probe.bias[:old], bias)
        if old:
            np.testing.assert_allclose(
                probe.logits[:, :old], before, rtol=ATOL, atol=ATOL
            )
        self.pending = None
        assert inc.classes_ == classes
        self.committed = classes
        self.stage += 1
        self.counts, self.short = expected_counts(
            self.counts, stage_counts, inc.memory_size
        )
        assert head_of(model).units == len(classes)
        predicted = model.predict(PROBE, verbose=0)
        np.testing.assert_allclose(
            predicted, logits(model), rtol=1e-5, atol=1e-6
        )
        assert set(inc.decode(inc.predict(PROBE))) <= set(classes)
        # The stage's checkpoint was written.
        self.snapshots[inc.checkpoint] = self._snapshot()

    def _remember(self, stage, seed):
        # Classes of finished stages only: `remember` refuses a class that
        # only a pending `prepare` brought (see
        # `test_remember_then_prepare_again_keeps_memory_labels`).
        labels = list(
            dict.fromkeys(
                self.committed[i % len(self.committed)] for i, _ in stage
            )
        )
        counts = [n for _, n in stage][: len(labels)]
        x, y = stage_arrays(labels, counts, seed, self.POOL)
        self._give(x, y)
        indices = {c: i for i, c in enumerate(self.inc.classes_)}

        assert self.inc.remember(x, y) == len(self.inc.memory)

        self.counts, self.short = expected_counts(
            self.counts,
            collections.Counter(indices[label] for label in y.tolist()),
            self.inc.memory_size,
        )

    def _save(self, own_path):
        if self.pending is not None:
            self.ran["save mid-stage"] += 1
        if own_path:
            path = self._path("saved")
            assert self.inc.save_checkpoint(path) == path
        else:
            path = self.inc.save_checkpoint()
            assert path == self.inc.checkpoint
        self.snapshots[path] = self._snapshot()

    def _restore(self, path):
        saved = self.snapshots[path]

        model, inc = ki.IncrementalModel.restore(path)

        assert inc.classes_ == saved["classes"]
        assert inc.stage_ == saved["stage"]
        assert inc.stage_classes_ == saved["stage_classes"]
        assert head_of(model).units == len(saved["classes"])
        now = self._snapshot(model, inc)
        _assert_same_arrays(now["weights"], saved["weights"], "weights")
        _assert_same_arrays(now["optimizer"], saved["optimizer"], "optimizer")
        _assert_same_arrays(now["memory"], saved["memory"], "memory")
        _assert_same_arrays(now["strategy"], saved["strategy"], "strategy")
        np.testing.assert_array_equal(now["logits"], saved["logits"])
        np.testing.assert_allclose(
            model.predict(PROBE, verbose=0),
            saved["logits"],
            rtol=1e-5,
            atol=1e-6,
        )
        # Go on with the restored run.
        self.model, self.inc = model, inc
        self.committed = saved["classes"]
        self.stage = saved["stage"]
        self.counts = dict(saved["counts"])
        self.pending = None
        self.restored = True

    def _transfer(self, extra, by_name, seed):
        path = self._path("model")
        self.model.save(path)
        classes = self.committed
        width = len(classes) + extra
        fresh = build_model(width, compiled=False)
        initial = np.array(head_of(fresh).kernel.numpy())
        if by_name:
            added = [self._unknown_class(i) for i in range(extra)]
            order = np.random.default_rng(seed).permutation(width)
            target = [(classes + added)[i] for i in order]
            report = ki.transfer_weights(
                path, fresh, source_classes=classes, target_classes=target
            )
        else:
            target = classes + [None] * extra
            report = ki.transfer_weights(path, fresh)

        assert "body" in report.copied, report
        if extra:
            assert "head" in report.grown, report
        elif not by_name:
            assert "head" in report.copied, report
        mine, theirs = logits(self.model), logits(fresh)
        columns = [target.index(c) for c in classes]
        if extra or by_name:
            # Another width or column order: the same sums, maybe blocked
            # differently.
            np.testing.assert_allclose(
                theirs[:, columns], mine, rtol=ATOL, atol=ATOL
            )
        else:
            # (Bit-exact on TensorFlow; a head with spare capacity, as on
            # JAX, multiplies a wider kernel.)
            assert_same_logits(theirs, mine)
        others = [i for i in range(width) if i not in columns]
        np.testing.assert_array_equal(
            head_of(fresh).kernel.numpy()[:, others], initial[:, others]
        )

    def _unknown_class(self, i):
        return f"new{i}" if isinstance(self.POOL[0], str) else 1000 + i

    # -- invariants ---------------------------------------------------------

    @invariant()
    def classes_append_only(self):
        if self.inc is None:
            return
        assert self.inc.classes_[: len(self.committed)] == self.committed
        assert self.inc.stage_ == self.stage
        units = head_of(self.model).units
        assert units == len(self.committed)
        if self.pending is None:
            assert units == len(self.inc.classes_)

    @invariant()
    def memory_within_budget_and_balanced(self):
        if self.inc is None:
            return
        memory = self.inc.memory
        assert len(memory) <= memory.memory_size
        x, y = memory.samples()
        found = collections.Counter(y.tolist())
        # Balanced: among the classes that had enough samples for their
        # share, counts differ by at most one (the remainder of the budget
        # goes to the lowest indices), and none holds more than its share.
        full = {c: n for c, n in found.items() if c not in self.short}
        if full:
            assert max(full.values()) - min(full.values()) <= 1, found
            ordered = [full[c] for c in sorted(full)]
            assert ordered == sorted(ordered, reverse=True), found
        if found:
            share = -(-memory.memory_size // len(found))
            assert max(found.values()) <= share, found
        # The exact rule of `ExemplarMemory.quotas` and `update`.
        assert dict(found) == self.counts, (dict(found), self.counts)
        # Every exemplar is a sample given with its class name.
        classes = self.inc.classes_
        assert all(0 <= i < len(self.committed) for i in y.tolist()), y
        if x is not None:
            for row, index in zip(x, y.tolist(), strict=True):
                assert classes[index] in self.given[row.tobytes()]

    # -- helpers ------------------------------------------------------------

    def _snapshot(self, model=None, inc=None):
        model = self.model if model is None else model
        inc = self.inc if inc is None else inc
        memory = inc.memory
        return {
            "classes": inc.classes_[: head_of(model).units],
            "stage": inc.stage_,
            "stage_classes": [list(g) for g in inc.stage_classes_],
            # By position: `load_model` renames a Sequential's variables.
            "weights": {i: v.numpy() for i, v in enumerate(model.weights)},
            "optimizer": {
                i: np.array(v.numpy())
                for i, v in enumerate(model.optimizer.variables)
            },
            "memory": {
                name: None if value is None else np.array(value)
                for name, value in [
                    ("x", memory.x_),
                    ("y", memory.y_),
                    ("logits", memory.logits_),
                    ("logit_widths", memory.logit_widths_),
                    ("updates", memory.updates_),
                ]
            },
            "strategy": dict(inc.strategy.get_state()),
            "logits": logits(model),
            "counts": dict(self.counts),
        }


def _assert_same_arrays(now, saved, what):
    assert sorted(now) == sorted(saved), (what, sorted(now), sorted(saved))
    for name, value in saved.items():
        if value is None:
            assert now[name] is None, (what, name)
            continue
        mine = np.asarray(now[name])
        assert mine.dtype == np.asarray(value).dtype, (what, name)
        np.testing.assert_array_equal(mine, value, err_msg=f"{what}: {name}")


class ReplayMachine(IncrementalMachine):
    STRATEGY = "replay"
    POOL = list("abcdefgh")
    ran = collections.Counter()


class DefaultMachine(IncrementalMachine):
    """The default strategy: distillation, balanced loss, weight aligning;
    integer class labels."""

    STRATEGY = "default"
    POOL = [7, 3, 11, 0, 5, 42, 1, 9]
    ran = collections.Counter()


# What each run must have tried: every operation, a head that grew with old
# columns to keep, a stage trained on a restored run, and a second `prepare`
# taking back the first's classes.
COVERED = {*OPERATIONS, "grow", "fit after restore", "prepare again"}


def test_replay_run_keeps_its_invariants():
    ReplayMachine.ran.clear()
    run_state_machine_as_test(ReplayMachine, settings=_settings(3, 12))
    assert set(ReplayMachine.ran) >= COVERED, ReplayMachine.ran


def test_default_run_keeps_its_invariants():
    DefaultMachine.ran.clear()
    run_state_machine_as_test(DefaultMachine, settings=_settings(3, 12))
    assert set(DefaultMachine.ran) >= COVERED, DefaultMachine.ran


def test_remember_then_prepare_again_keeps_memory_labels():
    """prepare(a, b); remember(b); prepare(c, d): the memory's samples of
    "b" must not come back as "d". `remember` refuses "b": its stage is not
    trained yet, and a second `prepare` may take its index back."""
    keras.utils.set_random_seed(0)
    pool = list("abcd")
    inc = ki.IncrementalModel(
        model=build_model(0), strategy="replay", memory_size=12
    )
    x_ab, y_ab = stage_arrays(["a", "b"], [4, 4], 0, pool)
    inc.prepare(x_ab, y_ab)
    with pytest.raises(ValueError, match="not trained yet"):
        inc.remember(x_ab[4:], y_ab[4:])  # "b": known since the `prepare`
    assert len(inc.memory) == 0
    x_cd, y_cd = stage_arrays(["c", "d"], [4, 4], 0, pool)
    xs, ys = inc.prepare(x_cd, y_cd)  # replaces the first: "a", "b" gone
    assert inc.classes_ == ["c", "d"]
    given = {row.tobytes(): "b" for row in x_ab[4:]}
    given.update({row.tobytes(): y for row, y in zip(x_cd, y_cd, strict=True)})
    x, y = inc.memory.samples()
    for row, index in zip(x if x is not None else [], y.tolist(), strict=True):
        assert index < len(inc.classes_)
        assert inc.classes_[index] == given[row.tobytes()]
    for row, name in zip(xs, inc.decode(ys), strict=True):
        assert name == given[row.tobytes()]
