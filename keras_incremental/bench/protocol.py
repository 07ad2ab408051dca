"""The class-incremental benchmark protocol.

Five stages of two classes, an MLP input-256-256-classes with ReLU, Adam
1e-3, batch 32, 5 epochs per stage, a 200-exemplar memory when the method
uses one; after each stage, accuracy on the test data of every class seen.
"""

import time
import warnings

import keras
import numpy as np

from keras_incremental import metrics
from keras_incremental.callbacks import IncrementalModel
from keras_incremental.layers import ExpandableDense
from keras_incremental.layers import RandomFeatures
from keras_incremental.memory import ExemplarMemory
from keras_incremental.strategies import EWC
from keras_incremental.strategies import Analytic

REFERENCES = ("rebuild", "joint")
# The analytic head on the protocol's MLP, its first stage trained with
# gradients (RanPAC's first phase); `"analytic"` itself runs on
# `RandomFeatures` of the raw inputs.
ANALYTIC_MLP = "analytic-mlp"
VARIANTS = (ANALYTIC_MLP,)
# The random features' width for `"analytic"` (see benchmarks/RESULTS.md for
# the trade-off of width against accuracy and time).
DEFAULT_WIDTH = 1024


def build_model(input_dim, units, layer=ExpandableDense, hidden=256):
    """The protocol's MLP: input-256-256-`units`, ReLU, logits out."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu", name="dense_1"),
            keras.layers.Dense(hidden, activation="relu", name="dense_2"),
            layer(units, name="head"),
        ]
    )


def build_random_features_model(input_dim, width, seed):
    """`Input -> RandomFeatures(width) -> ExpandableDense(0)`: the model of
    `"analytic"` in the protocol."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            RandomFeatures(width, seed=seed, name="features"),
            ExpandableDense(0, name="head"),
        ]
    )


def compile_model(model, steps_per_execution=1):
    """Adam 1e-3 and sparse cross-entropy on logits, as the protocol says."""
    if keras.backend.backend() == "torch":
        # Keras runs one step per call on PyTorch.
        steps_per_execution = 1
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def fit_stage(model, xs, ys, inc, epochs, batch_size, quiet=()):
    """`model.fit` of one prepared stage with the callback, silencing what
    the analytic head's stages make Keras say (nothing trains) and the
    warnings whose messages start with one of `quiet`."""
    with warnings.catch_warnings():
        for message in ("The model does not have any trainable", *quiet):
            warnings.filterwarnings("ignore", message)
        model.fit(
            xs,
            ys,
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=[inc],
        )


def split_stages(order, per_stage=2):
    """Class lists of consecutive stages: `[[0, 1], [2, 3], ...]`."""
    order = [int(c) for c in order]
    return [order[i : i + per_stage] for i in range(0, len(order), per_stage)]


def run(
    method,
    data,
    order=tuple(range(10)),
    seed=0,
    memory_size=200,
    epochs=5,
    batch_size=32,
    steps_per_execution=32,
    on_stage=None,
    width=DEFAULT_WIDTH,
):
    """Runs one method through the protocol and measures it.

    Args:
        method: A strategy name (see `keras_incremental.strategies.NAMED`)
            or a reference: `"rebuild"` (plain Keras: a new model with a
            wider `Dense` head each stage, the old weights copied, a fresh
            optimizer, fine-tuned on the new data and a 200-sample random
            memory) or `"joint"` (trained on all data seen so far: the upper
            bound).
        data: `(x_train, y_train, x_test, y_test)`, labels the class ids.
        order: The class order; consecutive pairs make the stages.
        seed: Seed of the weights, shuffling and exemplar choice.
        memory_size: Exemplar budget for the methods that keep one.
        epochs: Epochs per stage.
        batch_size: Batch size.
        steps_per_execution: Train steps per call into the compiled
            function, for the methods of this package. Defaults to `32`.
        on_stage: Optional callable `(stage, row, overall)` called after
            each stage's evaluation.
        width: The `RandomFeatures` width of `"analytic"`. Defaults to
            `DEFAULT_WIDTH`.

    Returns:
        A dict: `summarize`'s metrics plus `seconds` (training and
        evaluation), `method`, `seed`.
    """
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = data
    stages = split_stages(order)
    runner = _rebuild if method == "rebuild" else _incremental
    rows, overall = [], []
    start = time.perf_counter()
    for index, predict in enumerate(
        runner(
            method,
            x_train,
            y_train,
            stages,
            seed=seed,
            memory_size=memory_size,
            epochs=epochs,
            batch_size=batch_size,
            steps_per_execution=steps_per_execution,
            width=width,
        )
    ):
        seen = np.isin(y_test, np.concatenate(stages[: index + 1]))
        predicted = predict(x_test[seen])
        row, accuracy = metrics.stage_accuracies(
            y_test[seen], predicted, stages[: index + 1]
        )
        rows.append(row)
        overall.append(accuracy)
        if on_stage is not None:
            on_stage(index, row, accuracy)
    seconds = time.perf_counter() - start
    summary = metrics.summarize(metrics.accuracy_matrix(rows), overall)
    summary.update({"method": method, "seed": seed, "seconds": seconds})
    return summary


def _incremental(
    method,
    x_train,
    y_train,
    stages,
    seed,
    memory_size,
    epochs,
    batch_size,
    steps_per_execution,
    width=DEFAULT_WIDTH,
):
    """Our loop: one model, grown by `IncrementalModel` stage by stage.

    Stages go in as `tf.data` pipelines (shuffled, batched) on TensorFlow
    where the strategy allows, with `steps_per_execution`: the fast path the
    docs recommend. Strategies that need arrays (logit replay, EWC), and
    the other backends, get arrays. The analytic head reads each stage's
    samples once: its stages run one epoch (after the first, for
    `"analytic-mlp"`, which trains the MLP with gradients), with no memory.
    """

    joint = method == "joint"
    analytic = method in ("analytic", ANALYTIC_MLP)
    if method == "analytic":
        model = build_random_features_model(x_train.shape[1], width, seed)
        strategy = Analytic()
    elif method == ANALYTIC_MLP:
        model = build_model(x_train.shape[1], 0)
        strategy = Analytic(train_first_stage=True)
    else:
        model = build_model(x_train.shape[1], 0)
        strategy = "finetune" if joint else method
    model = compile_model(model, steps_per_execution)
    inc = IncrementalModel(
        model=model,
        strategy=strategy,
        memory_size=0 if joint or analytic else memory_size,
        seed=seed,
    )
    # JAX and PyTorch take NumPy batches straight; tf.data would convert
    # every batch from TensorFlow tensors.
    arrays = (
        keras.backend.backend() != "tensorflow"
        or analytic
        or inc.strategy.needs_logits
        or any(isinstance(p, EWC) for p in inc.strategy.parts)
    )
    stage_epochs = epochs
    for index, classes in enumerate(stages):
        if analytic:
            stage_epochs = epochs if inc.strategy.trains_head else 1
        seen = stages[: index + 1] if joint else [classes]
        mask = np.isin(y_train, np.concatenate(seen))
        if arrays:
            xs, ys = inc.prepare(x_train[mask], y_train[mask])
            fit_stage(model, xs, ys, inc, stage_epochs, batch_size)
        else:
            import tensorflow as tf

            dataset = (
                tf.data.Dataset.from_tensor_slices(
                    (x_train[mask], y_train[mask])
                )
                .shuffle(int(mask.sum()), seed=seed + index)
                .batch(batch_size)
            )
            stage_data, _ = inc.prepare(dataset)
            model.fit(
                stage_data.prefetch(2),
                shuffle=False,  # shuffled in the pipeline
                epochs=epochs,
                verbose=0,
                callbacks=[inc],
            )
        yield lambda x: np.asarray(inc.decode(inc.predict(x, batch_size=512)))


def _rebuild(
    method,
    x_train,
    y_train,
    stages,
    seed,
    memory_size,
    epochs,
    batch_size,
    steps_per_execution,
    width=None,
):
    """What users do today with plain Keras (no steps_per_execution)."""
    del method, steps_per_execution, width
    memory = ExemplarMemory(memory_size, seed=seed)
    classes = []
    model = None
    for classes_now in stages:
        classes = classes + list(classes_now)
        new = build_model(
            x_train.shape[1], len(classes), layer=keras.layers.Dense
        )
        if model is not None:
            for old_layer, new_layer in zip(
                model.layers, new.layers, strict=True
            ):
                weights = old_layer.get_weights()
                if new_layer.name == "head":
                    kernel, bias = new_layer.get_weights()
                    kernel[:, : weights[0].shape[1]] = weights[0]
                    bias[: weights[1].shape[0]] = weights[1]
                    weights = [kernel, bias]
                new_layer.set_weights(weights)
        model = compile_model(new)
        mask = np.isin(y_train, classes_now)
        x, y = x_train[mask], _indices(classes, y_train[mask])
        x_old, y_old = memory.samples()
        if len(y_old):
            x = np.concatenate([x, x_old])
            y = np.concatenate([y, y_old])
        model.fit(
            x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0
        )
        memory.update(x_train[mask], _indices(classes, y_train[mask]))
        names = np.asarray(classes)
        yield lambda x, m=model, n=names: n[
            m.predict(x, batch_size=512, verbose=0).argmax(-1)
        ]


def _indices(classes, labels):
    lookup = {c: i for i, c in enumerate(classes)}
    return np.asarray([lookup[int(c)] for c in labels], dtype="int64")
