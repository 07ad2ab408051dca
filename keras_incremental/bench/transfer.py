"""The transfer scenario: a pretrained backbone, frozen, meets new classes.

The seed question's first answer is transfer learning: the features of a
network trained on other classes, with a classifier for the new ones on top.
The protocol MLP's body (input-256-256, ReLU) is trained with a `Dense(5)`
softmax head on all the training data of classes 0..4 for 5 epochs (Adam
1e-3, batch 32), once per seed: the pretrained backbone. It is then frozen,
and classes 5..9 arrive one per stage. After each stage, accuracy on the
test data of the new classes seen so far (classes 0..4 are the backbone's
pretraining, not part of the run). Methods:

- a strategy name: `Input -> backbone (frozen) -> ExpandableDense(0)` run
  by `IncrementalModel` (`freeze="backbone"`, a 200-exemplar memory for the
  strategies that keep one, 5 epochs per stage; `"analytic"` reads each
  stage once: 1 epoch, no memory);
- `"joint-finetune"`: backbone and a `Dense(5)` head trained together on
  all the data of classes 5..9 for 5 epochs, from the pretrained weights
  (final stage only: the upper bound of training everything);
- `"linear-probe"`: the ridge regression on the frozen features of all the
  data of classes 5..9 at once, lambda by GCV, in NumPy (final stage only:
  the joint linear probe the analytic head must equal).
"""

import time

import keras
import numpy as np

from keras_incremental import metrics
from keras_incremental.bench import protocol
from keras_incremental.callbacks import IncrementalModel
from keras_incremental.layers import ExpandableDense
from keras_incremental.strategies.ridge import RidgeStatistics

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
NEW_CLASSES = (5, 6, 7, 8, 9)
REFERENCES = ("joint-finetune", "linear-probe")
EPOCHS = 5
BATCH_SIZE = 32
MEMORY_SIZE = 200


def pretrain(data, seed):
    """The backbone: the protocol MLP's body trained on `PRETRAIN_CLASSES`.

    Returns:
        A `keras.Sequential` from the inputs to the 256 features.
    """
    x_train, y_train, _, _ = data
    keras.utils.set_random_seed(seed)
    body = keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(256, activation="relu", name="dense_1"),
            keras.layers.Dense(256, activation="relu", name="dense_2"),
        ],
        name="backbone",
    )
    classifier = keras.Sequential(
        [body, keras.layers.Dense(len(PRETRAIN_CLASSES), activation="softmax")]
    )
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
    )
    mask = np.isin(y_train, PRETRAIN_CLASSES)
    classifier.fit(
        x_train[mask],
        y_train[mask],
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        verbose=0,
    )
    return body


def _copy_backbone(body):
    copy = keras.models.clone_model(body)
    copy.set_weights(body.get_weights())
    return copy


def _features(body, x):
    return keras.ops.convert_to_numpy(body(x, training=False))


def run(method, data, body, seed=0):
    """One method through the scenario; returns `summarize`'s metrics plus
    `seconds` (training and evaluation, not the pretraining), `method` and
    `seed`."""
    x_train, y_train, x_test, y_test = data
    stages = [[c] for c in NEW_CLASSES]
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    if method in REFERENCES:
        # Measured once, at the end, on every stage's classes.
        predictors = [_reference(method, body, x_train, y_train)]
        seen_after = [stages]
    else:
        predictors = _incremental(method, body, x_train, y_train, stages, seed)
        seen_after = [stages[: i + 1] for i in range(len(stages))]
    rows, overall = [], []
    for predict, seen in zip(predictors, seen_after, strict=True):
        mask = np.isin(y_test, np.concatenate(seen))
        row, accuracy = metrics.stage_accuracies(
            y_test[mask], predict(x_test[mask]), seen
        )
        rows.append(row)
        overall.append(accuracy)
    seconds = time.perf_counter() - start
    if method in REFERENCES:
        summary = {"final_accuracy": overall[-1], "accuracy_matrix": rows}
    else:
        summary = metrics.summarize(metrics.accuracy_matrix(rows), overall)
    summary.update({"method": method, "seed": seed, "seconds": seconds})
    return summary


def _incremental(method, body, x_train, y_train, stages, seed):
    model = keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            _copy_backbone(body),
            ExpandableDense(0, name="head"),
        ]
    )
    protocol.compile_model(model)
    analytic = method == "analytic"
    inc = IncrementalModel(
        model=model,
        strategy=method,
        memory_size=0 if analytic else MEMORY_SIZE,
        freeze="backbone",
        seed=seed,
    )
    for classes in stages:
        mask = np.isin(y_train, classes)
        xs, ys = inc.prepare(x_train[mask], y_train[mask])
        protocol.fit_stage(
            model, xs, ys, inc, 1 if analytic else EPOCHS, BATCH_SIZE
        )
        yield lambda x: np.asarray(inc.decode(inc.predict(x, batch_size=512)))


def _reference(method, body, x_train, y_train):
    mask = np.isin(y_train, NEW_CLASSES)
    x, y = x_train[mask], y_train[mask]
    index = np.searchsorted(NEW_CLASSES, y)
    names = np.asarray(NEW_CLASSES)
    if method == "linear-probe":
        features = _features(body, x)
        statistics = RidgeStatistics(features.shape[1])
        statistics.grow(len(NEW_CLASSES))
        statistics.add(features, index)
        kernel, bias, _ = statistics.solve("auto")
        return lambda x: names[(_features(body, x) @ kernel + bias).argmax(-1)]
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            _copy_backbone(body),
            keras.layers.Dense(len(NEW_CLASSES)),
        ]
    )
    protocol.compile_model(model)
    model.fit(x, index, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    return lambda x: names[
        model.predict(x, batch_size=512, verbose=0).argmax(-1)
    ]
