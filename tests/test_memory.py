"""Exemplar memory: budget, balance, herding, logits, persistence."""

import io

import h5py
import numpy as np
import pytest

from keras_incremental.memory import ExemplarMemory
from keras_incremental.memory.selection import herding_order

pytestmark = pytest.mark.backend_independent


def _stage(classes, per_class=30, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(per_class * len(classes), features))
    y = np.repeat(classes, per_class)
    return x.astype("float32"), y


def test_never_over_budget_and_balanced_after_every_stage():
    memory = ExemplarMemory(20, seed=3)
    for stage, classes in enumerate([[0, 1], [2, 3], [4, 5, 6]]):
        memory.update(*_stage(classes, seed=stage))
        counts = np.bincount(memory.samples()[1])
        seen = 2 * (stage + 1) + (stage == 2)
        assert len(memory) <= 20
        assert counts.size == seen
        # Split evenly; the first classes get the remainder.
        assert counts.max() - counts.min() <= 1
        assert len(memory) == min(20, 30 * seen)


def test_shrinking_keeps_the_first_exemplars_in_priority_order():
    memory = ExemplarMemory(12, seed=0)
    memory.update(*_stage([0, 1]))
    x_before = memory.samples()[0][memory.samples()[1] == 0].copy()
    memory.update(*_stage([2, 3], seed=1))
    x_after = memory.samples()[0][memory.samples()[1] == 0]
    # Class 0 had 6 exemplars, keeps 3: the first 3 of its order.
    np.testing.assert_array_equal(x_after, x_before[:3])


def test_herding_matches_a_hand_computed_case():
    # Normalised: a=(1,0), b=(0,1), c=(.707,.707); mean (.569, .569).
    # k=1: c is the mean's nearest (0.195 against 0.714).
    # k=2: (c+a)/2 and (c+b)/2 are equally far (0.357): the lower index, a.
    features = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(herding_order(features), [2, 0, 1])
    # Scale does not matter: features are normalised first.
    np.testing.assert_array_equal(herding_order(features * 7.0), [2, 0, 1])
    np.testing.assert_array_equal(herding_order(features, count=1), [2])


def test_herding_picks_differ_from_random_and_approach_the_mean():
    x, y = _stage([0], per_class=200, features=8)
    random_memory = ExemplarMemory(10, selection="random", seed=0)
    herding_memory = ExemplarMemory(10, selection="herding", seed=0)
    random_memory.update(x, y)
    herding_memory.update(x, y, embed=lambda inputs: inputs)
    picked_random = random_memory.samples()[0]
    picked_herding = herding_memory.samples()[0]
    assert not np.array_equal(picked_random, picked_herding)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    target = unit.mean(0)

    def gap(picked):
        unit_picked = picked / np.linalg.norm(picked, axis=1, keepdims=True)
        return np.linalg.norm(unit_picked.mean(0) - target)

    assert gap(picked_herding) < gap(picked_random) / 2


def test_herding_needs_features_and_changes_nothing_without():
    memory = ExemplarMemory(10, selection="herding")
    with pytest.raises(ValueError, match="Received: embed=None"):
        memory.update(*_stage([0, 1]))
    assert len(memory) == 0 and memory.updates_ == 0


def test_logits_are_kept_with_their_width_and_padded():
    memory = ExemplarMemory(8, seed=0)
    memory.update(*_stage([0, 1]), predict=lambda x: np.full((len(x), 2), 1.0))
    memory.update(
        *_stage([2, 3], seed=1), predict=lambda x: np.full((len(x), 4), 2.0)
    )
    logits, mask = memory.logit_targets(5)
    y = memory.samples()[1]
    old = np.isin(y, [0, 1])
    np.testing.assert_array_equal(logits[old][:, :2], 1.0)
    np.testing.assert_array_equal(mask[old], [[1, 1, 0, 0, 0]] * old.sum())
    np.testing.assert_array_equal(logits[~old][:, :4], 2.0)
    np.testing.assert_array_equal(mask[~old][:, 4], 0.0)


def test_save_and_load_round_trip_bit_exactly():
    memory = ExemplarMemory(9, selection="herding", seed=5)
    x, y = _stage([0, 1, 2])
    memory.update(x, y, embed=lambda v: v, predict=lambda v: v[:, :3] * 1.5)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        memory.save(file.create_group("memory"))
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as file:
        loaded = ExemplarMemory.load(file["memory"])
    assert (loaded.memory_size, loaded.selection, loaded.seed) == (
        9,
        "herding",
        5,
    )
    assert loaded.updates_ == memory.updates_
    for a, b in [
        (loaded.x_, memory.x_),
        (loaded.y_, memory.y_),
        (loaded.logits_, memory.logits_),
        (loaded.logit_widths_, memory.logit_widths_),
    ]:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: selection='nearest'"):
        ExemplarMemory(10, selection="nearest")
    memory = ExemplarMemory(10)
    with pytest.raises(ValueError, match="5 samples and 4 labels"):
        memory.update(np.zeros((5, 2)), np.zeros(4, dtype=int))
    assert len(memory) == 0


def test_logits_follow_their_samples_when_an_update_has_none():
    # A memory with logits, updated without `predict` (another strategy):
    # its logits stay one row per sample, new samples without any.
    memory = ExemplarMemory(8, seed=0)
    memory.update(*_stage([0, 1]), predict=lambda x: np.full((len(x), 2), 1.0))
    memory.update(*_stage([2, 3], seed=1))
    assert memory.logits_.shape[0] == len(memory) == 8
    old = np.isin(memory.samples()[1], [0, 1])
    np.testing.assert_array_equal(memory.logit_widths_, np.where(old, 2, 0))
    logits, mask = memory.logit_targets(4)
    np.testing.assert_array_equal(mask[old], [[1, 1, 0, 0]] * old.sum())
    np.testing.assert_array_equal(mask[~old], 0.0)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        memory.save(file.create_group("memory"))
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as file:
        loaded = ExemplarMemory.load(file["memory"], memory_size=8)
    np.testing.assert_array_equal(loaded.logit_widths_, memory.logit_widths_)
