"""A staged run for the distribution tests, importable or run as a process.

`tests/test_distributed.py` imports the run (`digits_stages`, `new_model`,
`staged_run`, `accuracy`) for its in-process TensorFlow runs, and starts
this file where a setup needs processes of its own:

    python tests/distributed_run.py SETUP OUT_DIR [--checkpoint PATH]
        [--data NPZ]

`SETUP` is one of:

- `multi-worker`: one worker of a `tf.distribute.MultiWorkerMirroredStrategy`
  (the cluster and this worker's task in `TF_CONFIG`). After each stage it
  records a checksum of every variable of the model and of its optimizer.
- `data-parallel`: JAX under `keras.distribution.DataParallel` over every
  device (start it with `XLA_FLAGS=--xla_force_host_platform_device_count=2`).
  After each stage it records, for every variable, its devices and whether
  the copies on them are equal. Then, with the distribution unset (one
  device), it restores the checkpoint and runs the same stages afresh: the
  single-device reference.

The stage checkpoint goes to `--checkpoint` (default `OUT_DIR/run.keras`).
`--data` names an `.npz` file written by `save_stages` (the stages and test
data); without it the process loads the digits itself (scikit-learn).
It writes `OUT_DIR/report.json` and `OUT_DIR/predictions.npy` (the final
model's logits on the test data); `data-parallel` also writes
`OUT_DIR/restored.npy` and `OUT_DIR/single.npy`.
"""

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STAGES = ([0, 1], [2, 3], [4, 5])
MEMORY_SIZE = 40
EPOCHS = 3
LEARNING_RATE = 5e-3
BATCH_SIZE = 32
SEED = 0


def digits_stages():
    """Digits scaled to [0, 1], split 80/20 (stratified, seed 0).

    Returns:
        `(stages, (x_test, names_test))`: one `(x, names)` per stage of
        `STAGES` (class names as strings), and the test data of every class
        the stages bring.
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x, x_test, y, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven"]
        + ["eight", "nine"]
    )
    # `DataParallel` splits every batch over the devices, so each array
    # (and so each last batch) has an even length here: 2 devices.
    stages = []
    for classes in STAGES:
        keep = np.flatnonzero(np.isin(y, classes))
        keep = keep[: len(keep) // 2 * 2]
        stages.append((x[keep], names[y[keep]]))
    seen = np.flatnonzero(
        np.isin(y_test, [c for classes in STAGES for c in classes])
    )
    seen = seen[: len(seen) // 2 * 2]
    return stages, (x_test[seen], names[y_test[seen]])


def save_stages(path, data):
    """Writes `digits_stages()`'s result to an `.npz` file, for `--data`."""
    import numpy as np

    stages, (x_test, names_test) = data
    arrays = {"x_test": x_test, "names_test": names_test}
    for index, (x, names) in enumerate(stages):
        arrays[f"x_{index}"] = x
        arrays[f"names_{index}"] = names
    np.savez(path, **arrays)


def load_stages(path):
    """Reads what `save_stages` wrote: `digits_stages()`'s result."""
    import numpy as np

    with np.load(path, allow_pickle=False) as arrays:
        stages = [
            (arrays[f"x_{index}"], arrays[f"names_{index}"])
            for index in range(len(STAGES))
        ]
        return stages, (arrays["x_test"], arrays["names_test"])


def new_model():
    """A small MLP with a 0-unit head, compiled (in the current scope)."""
    import keras

    import keras_incremental as ki

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="body"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, inc, test):
    """`(accuracy, logits)` of `model` on `test`, decoded to class names."""
    x_test, names_test = test
    logits = model.predict(x_test, batch_size=BATCH_SIZE, verbose=0)
    predicted = inc.decode(logits.argmax(-1))
    return float((predicted == names_test).mean()), logits


def stage_check(model, inc, variables):
    """What a run reports after a stage: the head's width, the classes and
    the per-variable replica checks."""
    return {
        "units": model.get_layer("head").units,
        "classes": list(inc.classes_),
        "variables": variables,
    }


def staged_run(model, inc, stages, after_stage=None):
    """One `prepare` + `fit` per stage; `after_stage(index)` after each."""
    for index, (x, names) in enumerate(stages):
        xs, ys = inc.prepare(x, names)
        model.fit(
            xs,
            ys,
            epochs=EPOCHS,
            batch_size=BATCH_SIZE,
            verbose=0,
            callbacks=[inc],
        )
        if after_stage is not None:
            after_stage(index)


def state_variables(model):
    """The variables of the model and of its optimizer, in a stable order."""
    return list(model.weights) + list(model.optimizer.variables)


def checksum(array):
    import numpy as np

    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    return f"{array.dtype}{list(array.shape)}:{digest}"


def patch_keras_multi_worker():
    """Works around two bugs of Keras 3.15.1 (`keras-team/keras#20585`) that
    stop every `fit` under a multi-worker `MultiWorkerMirroredStrategy`,
    with or without this package; neither changes what is trained.

    - `_maybe_symbolic_build` reduces the whole first batch (a tuple of
      per-replica values) with `strategy.reduce`, which the collective
      strategy takes only for one value ("Attempt to convert a value
      (PerReplica...) ... to a Tensor"): only the batch's shapes are needed,
      so one replica's part is used.
    - `reduce_per_replica(..., "mean")` reduces the (scalar) logs with
      `axis=0` ("Invalid reduction dimension 0 for input with 0
      dimensions"): scalars are reduced over the replicas only.

    Returns:
        The names of what was patched.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def one_replica(value, strategy):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: one_replica(v, strategy), next(batches)
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and (
            trainer._collective_all_reduce_multi_worker(strategy)
        ):
            return tree.map_structure(
                lambda v: strategy.reduce(
                    "MEAN", v, axis=None if v.shape.rank == 0 else 0
                ),
                values,
            )
        return original(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    return ["_maybe_symbolic_build", "reduce_per_replica"]


def _multi_worker(out, checkpoint, data):
    import tensorflow as tf

    # Made first: the cluster is joined before any other TensorFlow work.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    import keras_incremental as ki

    patched = patch_keras_multi_worker()
    keras.utils.set_random_seed(SEED)
    stages, test = load_stages(data) if data else digits_stages()
    with strategy.scope():
        model = new_model()
    inc = ki.IncrementalModel(memory_size=MEMORY_SIZE, checkpoint=checkpoint)
    checks = []

    def after_stage(index):
        variables = []
        for variable in state_variables(model):
            value = variable.value
            variables.append(
                {
                    "path": variable.path,
                    "distributed": isinstance(
                        value, tf.distribute.DistributedValues
                    ),
                    "local_copies": [
                        checksum(v.numpy())
                        for v in getattr(value, "values", (value,))
                    ],
                }
            )
        checks.append(stage_check(model, inc, variables))

    staged_run(model, inc, stages, after_stage)
    score, logits = accuracy(model, inc, test)
    return {
        "task": json.loads(os.environ["TF_CONFIG"])["task"],
        "replicas_in_sync": strategy.num_replicas_in_sync,
        "keras_patched": patched,
        "stages": checks,
        "accuracy": score,
    }, logits


def _devices(variable):
    return sorted(str(d) for d in variable.value.sharding.device_set)


def _data_parallel(out, checkpoint, data):
    import jax
    import keras
    import numpy as np

    import keras_incremental as ki

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(
            devices=keras.distribution.list_devices()
        )
    )
    keras.utils.set_random_seed(SEED)
    stages, test = load_stages(data) if data else digits_stages()
    model = new_model()
    inc = ki.IncrementalModel(memory_size=MEMORY_SIZE, checkpoint=checkpoint)
    checks = []

    def after_stage(index):
        variables = []
        for variable in state_variables(model):
            shards = variable.value.addressable_shards
            first = np.asarray(shards[0].data)
            variables.append(
                {
                    "path": variable.path,
                    "devices": sorted(str(s.device) for s in shards),
                    "whole": all(
                        tuple(s.data.shape) == tuple(variable.shape)
                        for s in shards
                    ),
                    "equal": all(
                        np.array_equal(np.asarray(s.data), first)
                        for s in shards[1:]
                    ),
                }
            )
        checks.append(stage_check(model, inc, variables))

    staged_run(model, inc, stages, after_stage)
    score, logits = accuracy(model, inc, test)
    report = {
        "devices": [str(d) for d in jax.devices()],
        "stages": checks,
        "accuracy": score,
    }

    # One device from here on: the checkpoint restored, then the reference.
    keras.distribution.set_distribution(None)
    restored, restored_inc = ki.IncrementalModel.restore(checkpoint)
    restored_score, restored_logits = accuracy(restored, restored_inc, test)
    report["restored"] = {
        "accuracy": restored_score,
        "classes": list(restored_inc.classes_),
        "stage": restored_inc.stage_,
        "devices": sorted(
            {d for v in state_variables(restored) for d in _devices(v)}
        ),
    }
    np.save(
        os.path.join(out, "restored.npy"), restored_logits, allow_pickle=False
    )

    keras.utils.set_random_seed(SEED)
    single = new_model()
    single_inc = ki.IncrementalModel(memory_size=MEMORY_SIZE)
    staged_run(single, single_inc, stages)
    single_score, single_logits = accuracy(single, single_inc, test)
    report["single"] = {
        "accuracy": single_score,
        "devices": sorted(
            {d for v in state_variables(single) for d in _devices(v)}
        ),
    }
    np.save(os.path.join(out, "single.npy"), single_logits, allow_pickle=False)
    return report, logits


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup", choices=["multi-worker", "data-parallel"])
    parser.add_argument("out")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    checkpoint = args.checkpoint or os.path.join(args.out, "run.keras")
    if args.setup == "multi-worker":
        report, logits = _multi_worker(args.out, checkpoint, args.data)
    else:
        report, logits = _data_parallel(args.out, checkpoint, args.data)
    import keras

    report["backend"] = keras.backend.backend()
    report["checkpoint"] = checkpoint
    np.save(
        os.path.join(args.out, "predictions.npy"), logits, allow_pickle=False
    )
    with open(os.path.join(args.out, "report.json"), "w") as file:
        json.dump(report, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
