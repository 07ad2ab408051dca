"""What the next strategies plug into (issue 19, item 6), shown with a test
strategy: one that sees each batch's features and labels in the train step
(adding no loss), sets the head's weights itself at the stage end (no
gradient step and no optimizer state for the head), keeps its own arrays in
the checkpoint, and gives a score beside every prediction, through
`predict` and the serving signature."""

import keras
import numpy as np
import pytest
from helpers import TENSORFLOW

import keras_incremental as ki
from keras_incremental import compat
from keras_incremental.strategies.features import feature_extractor

FEATURES = 6


@keras.saving.register_keras_serializable(package="keras_incremental_tests")
class NegativeMaxLogit(keras.layers.Layer):
    """A score per sample: minus the largest logit (no weights)."""

    def call(self, logits):
        return -keras.ops.max(logits, axis=-1)


class ClassMeans(ki.strategies.Strategy):
    """The head as a nearest-class-mean classifier, from the features of
    every training batch: `W[:, c] = mean_c`, `b[c] = -|mean_c|^2 / 2`."""

    name = "class-means"
    trains_head = False

    def __init__(self):
        self.sums = np.zeros((0, FEATURES))
        self.counts = np.zeros((0,))
        self.sum_variable = None
        self.count_variable = None

    def begin_stage(self, context):
        units = context.head.units
        self.sum_variable = keras.Variable(
            np.zeros((units, FEATURES), "float32"), trainable=False
        )
        self.count_variable = keras.Variable(
            np.zeros((units,), "float32"), trainable=False
        )

    def stage_variables(self):
        if self.sum_variable is None:
            return []
        return [self.sum_variable, self.count_variable]

    def observe(self, context, features, labels, sample_weight):
        onehot = keras.ops.one_hot(
            keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32"),
            self.count_variable.shape[0],
        )
        self.sum_variable.assign_add(
            keras.ops.matmul(keras.ops.transpose(onehot), features)
        )
        self.count_variable.assign_add(keras.ops.sum(onehot, axis=0))

    def end_stage(self, context):
        units = context.head.units
        sums = np.zeros((units, FEATURES))
        counts = np.zeros((units,))
        sums[: len(self.sums)] = self.sums
        counts[: len(self.counts)] = self.counts
        sums += keras.ops.convert_to_numpy(self.sum_variable)
        counts += keras.ops.convert_to_numpy(self.count_variable)
        self.sums, self.counts = sums, counts
        self.set_head(context.head)

    def set_head(self, head):
        means = self.sums / np.maximum(self.counts, 1)[:, None]
        kernel = keras.ops.convert_to_numpy(head.kernel).copy()
        bias = keras.ops.convert_to_numpy(head.bias).copy()
        units = len(means)
        kernel[:, :units] = means.T
        bias[:units] = -0.5 * np.sum(means**2, axis=1)
        head.kernel.assign(kernel)
        head.bias.assign(bias)

    def score_layers(self, context):
        return {"surprise": NegativeMaxLogit()}

    def get_state(self):
        return {"sums": self.sums, "counts": self.counts}

    def set_state(self, state):
        self.sums = np.asarray(state.get("sums", np.zeros((0, FEATURES))))
        self.counts = np.asarray(state.get("counts", np.zeros((0,))))

    def check_state(self, model, head):
        units = head.units
        if self.sums.shape != (units, FEATURES) or self.counts.shape != (
            units,
        ):
            raise ValueError(
                f"class sums of shape {self.sums.shape} and counts of shape "
                f"{self.counts.shape} do not fit a head of {units} units"
            )


def _model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(FEATURES, activation="relu", name="body"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _stage(classes, n=24, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(classes, n)
    centers = np.eye(4, dtype="float32")[np.asarray(y) % 4] * 3.0
    x = centers + rng.normal(scale=0.3, size=(len(y), 4)).astype("float32")
    return x, y


def _fit(model, inc, classes, seed=0, epochs=1):
    x, y = _stage(classes, seed=seed)
    xs, ys = inc.prepare(x, y)
    model.fit(
        xs,
        ys,
        epochs=epochs,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[inc],
    )
    return x, y


def _expected_means(model, stages):
    extractor = feature_extractor(model, model.get_layer("head"))
    xs = np.concatenate([x for x, _ in stages])
    ys = np.concatenate([y for _, y in stages])
    features = keras.ops.convert_to_numpy(extractor(xs))
    classes = sorted(set(ys.tolist()))
    return np.stack([features[ys == c].mean(axis=0) for c in classes]), [
        int((ys == c).sum()) for c in classes
    ]


@pytest.mark.parametrize("capacity", [None, 8])
def test_a_strategy_sees_every_batch_and_sets_the_head_itself(capacity):
    keras.utils.set_random_seed(0)
    model = _model()
    strategy = ClassMeans()
    # The body fixed (a pretrained backbone): nothing gets a gradient step.
    inc = ki.IncrementalModel(
        model=model, strategy=strategy, freeze="backbone", capacity=capacity
    )
    body = [np.array(w) for w in model.get_layer("body").get_weights()]
    stages = [_fit(model, inc, [0, 1]), _fit(model, inc, [2], seed=1)]
    head = model.get_layer("head")
    means, counts = _expected_means(model, stages)
    # (a) every batch of every stage, exactly once (one epoch), was seen,
    # with the features that enter the head.
    np.testing.assert_array_equal(strategy.counts, counts)
    np.testing.assert_allclose(
        strategy.sums / strategy.counts[:, None], means, rtol=1e-5, atol=1e-5
    )
    # (b) the head is what the strategy set: the class means.
    kernel = keras.ops.convert_to_numpy(head.kernel)[:, : head.units]
    np.testing.assert_allclose(kernel, means.T, rtol=1e-5, atol=1e-5)
    for before, after in zip(
        body, model.get_layer("body").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(before, after)
    # It classifies: the nearest class mean of well-separated clusters.
    x, y = _stage([0, 1, 2], seed=5)
    assert np.mean(inc.predict(x) == y) > 0.9


def test_a_head_set_by_the_strategy_has_no_optimizer_state():
    keras.utils.set_random_seed(0)
    model = _model()
    strategy = ClassMeans()
    inc = ki.IncrementalModel(model=model, strategy=strategy, capacity=None)
    body = [np.array(w) for w in model.get_layer("body").get_weights()]
    _fit(model, inc, [0, 1])
    _fit(model, inc, [2], seed=1)
    head = model.get_layer("head")
    # The body trained; the head holds what the strategy set from the
    # features it saw, not a gradient step's result.
    after = model.get_layer("body").get_weights()
    assert any(
        not np.array_equal(b, a) for b, a in zip(body, after, strict=True)
    )
    means = strategy.sums / strategy.counts[:, None]
    kernel = keras.ops.convert_to_numpy(head.kernel)[:, : head.units]
    np.testing.assert_allclose(kernel, means.T, rtol=1e-5, atol=1e-6)
    assert not head.trainable
    for variable in (head.kernel, head.bias):
        assert not compat.optimizer_knows(model.optimizer, variable)
    assert compat.optimizer_knows(
        model.optimizer, model.get_layer("body").kernel
    )


def test_a_strategy_observing_adds_no_loss():
    # One batch: the loss `fit` reports is that of the weights the stage
    # starts from, the same seed giving the same weights. Observing the
    # batch adds nothing to it: it equals plain fine-tuning's.
    losses = []
    for strategy in (ClassMeans(), ki.strategies.Strategy()):
        keras.utils.set_random_seed(0)
        model = _model()
        inc = ki.IncrementalModel(model=model, strategy=strategy, capacity=None)
        x, y = _stage([0, 1])
        xs, ys = inc.prepare(x, y)
        history = model.fit(
            xs, ys, epochs=1, batch_size=len(xs), verbose=0, callbacks=[inc]
        )
        losses.append(history.history["loss"][0])
    assert np.isfinite(losses[0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_strategy_arrays_go_through_the_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "stages.keras"
    model = _model()
    # The body fixed, so that the features do not depend on the random
    # initial column of the class the next stage brings.
    inc = ki.IncrementalModel(
        model=model,
        strategy=ClassMeans(),
        checkpoint=str(path),
        freeze="backbone",
        capacity=None,
    )
    _fit(model, inc, [0, 1])
    saved = inc.strategy.get_state()
    restored_model, restored = ki.IncrementalModel.restore(
        str(path), strategy=ClassMeans(), capacity=None
    )
    for name, value in saved.items():
        np.testing.assert_array_equal(
            restored.strategy.get_state()[name], value
        )
    # Restore then one more stage equals the uninterrupted run.
    _fit(model, inc, [2], seed=1)
    _fit(restored_model, restored, [2], seed=1)
    np.testing.assert_allclose(
        restored.strategy.counts, inc.strategy.counts, rtol=0
    )
    np.testing.assert_allclose(
        restored.strategy.sums, inc.strategy.sums, rtol=1e-5, atol=1e-5
    )


def test_strategy_arrays_that_do_not_fit_are_refused(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "stages.keras"
    model = _model()
    strategy = ClassMeans()
    inc = ki.IncrementalModel(
        model=model, strategy=strategy, checkpoint=str(path), capacity=None
    )
    _fit(model, inc, [0, 1])
    strategy.counts = np.zeros((5,))  # a crafted state: 5 counts, 2 units
    inc.save_checkpoint()
    with pytest.raises(ValueError, match="do not fit a head of 2 units"):
        ki.IncrementalModel.restore(str(path), strategy=ClassMeans())


def test_scores_come_with_predict_and_the_serving_export(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    inc = ki.IncrementalModel(model=model, strategy=ClassMeans(), capacity=None)
    _fit(model, inc, [0, 1])
    x, _ = _stage([0, 1], seed=3)
    indices, scores = inc.predict(x, return_scores=True)
    np.testing.assert_array_equal(indices, inc.predict(x))
    logits = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(
        scores["surprise"], -logits.max(axis=-1), rtol=1e-5, atol=1e-6
    )
    if not TENSORFLOW:
        # Off TensorFlow the export's subprocess must import the score
        # layer's class; this test's own is not importable there.
        return
    import tensorflow as tf

    version = inc.export(tmp_path / "serving")
    served = tf.saved_model.load(version)
    answer = served.signatures["serving_default"](inputs=tf.constant(x))
    np.testing.assert_allclose(
        answer["surprise"].numpy(), scores["surprise"], rtol=1e-5, atol=1e-6
    )
    assert answer["surprise"].dtype == tf.float32
    assert sorted(answer) == [
        "class_ids",
        "classes",
        "probabilities",
        "surprise",
    ]


def test_serving_scores_are_checked(tmp_path):
    model = _model()
    model.build((None, 4))
    model.get_layer("head").expand(2)
    with pytest.raises(ValueError, match="an output the signature has"):
        ki.export_for_serving(
            model, tmp_path / "s", scores={"classes": NegativeMaxLogit()}
        )
    with pytest.raises(TypeError, match="to be a Keras layer"):
        ki.export_for_serving(model, tmp_path / "s", scores={"s": abs})
    with pytest.raises(ValueError, match="identifiers"):
        ki.export_for_serving(
            model, tmp_path / "s", scores={"a b": NegativeMaxLogit()}
        )
    assert not (tmp_path / "s").exists()


def test_a_restored_run_trains_the_head_again_under_another_strategy(
    tmp_path,
):
    keras.utils.set_random_seed(0)
    path = tmp_path / "stages.keras"
    model = _model()
    inc = ki.IncrementalModel(
        model=model, strategy=ClassMeans(), checkpoint=str(path), capacity=None
    )
    _fit(model, inc, [0, 1])
    assert inc.state()["head_frozen_by_strategy"] is True
    restored_model, restored = ki.IncrementalModel.restore(
        str(path), strategy="finetune", capacity=None
    )
    head = restored_model.get_layer("head")
    assert not head.trainable  # as saved, until the next stage starts
    before = keras.ops.convert_to_numpy(head.kernel)[:, :2].copy()
    _fit(restored_model, restored, [2], seed=1)
    assert head.trainable
    after = keras.ops.convert_to_numpy(head.kernel)[:, :2]
    assert not np.array_equal(before, after)  # a gradient step moved it
    assert restored.state()["head_frozen_by_strategy"] is False


def test_a_head_the_user_froze_stays_frozen_after_restore(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "stages.keras"
    model = _model()
    inc = ki.IncrementalModel(
        model=model,
        strategy="finetune",
        checkpoint=str(path),
        freeze=lambda layer: layer.name == "head",
        capacity=None,
    )
    _fit(model, inc, [0, 1])
    with pytest.warns(UserWarning, match="callable"):
        restored_model, restored = ki.IncrementalModel.restore(
            str(path), capacity=None
        )
    head = restored_model.get_layer("head")
    assert not head.trainable
    before = keras.ops.convert_to_numpy(head.kernel)[:, :2].copy()
    _fit(restored_model, restored, [2], seed=1)
    # Not frozen by a strategy: the restored run leaves it as the user set
    # it until a `freeze` says otherwise.
    assert not head.trainable
    after = keras.ops.convert_to_numpy(head.kernel)[:, :2]
    np.testing.assert_array_equal(before, after)
    assert restored.state()["head_frozen_by_strategy"] is False
