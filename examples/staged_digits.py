"""Class-incremental training on scikit-learn's digits, two classes a stage.

The classes arrive as names ("zero" ... "nine"), two at a time. The model's
head starts with no unit and grows by itself; 200 exemplars of earlier classes
are replayed; each stage is checkpointed. After each stage the script prints
the accuracy on the test data of all classes seen so far.

    python examples/staged_digits.py [--epochs 5] [--folder run]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_incremental as ki  # noqa: E402
from keras_incremental.demo import NAMES as DIGIT_NAMES  # noqa: E402

NAMES = np.array(DIGIT_NAMES)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--folder", default="run")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        NAMES[digits.target],
        test_size=0.2,
        stratify=digits.target,
        random_state=0,
    )

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    checkpoint = os.path.join(args.folder, "stages.keras")
    inc = ki.IncrementalModel(memory_size=200, checkpoint=checkpoint)
    accuracies = []
    for stage in range(5):
        new = NAMES[2 * stage : 2 * stage + 2]
        mask = np.isin(y_train, new)
        xs, ys = inc.prepare(x_train[mask], y_train[mask])
        model.fit(
            xs,
            ys,
            epochs=args.epochs,
            batch_size=32,
            verbose=0,
            callbacks=[inc],
        )
        seen = np.isin(y_test, NAMES[: 2 * stage + 2])
        logits = model.predict(x_test[seen], verbose=0)
        predicted = np.asarray(inc.decode(logits.argmax(-1)))
        accuracy = float(np.mean(predicted == y_test[seen]))
        accuracies.append(accuracy)
        print(
            f"stage {stage + 1}: new classes {new.tolist()}, "
            f"{len(inc.classes_)} classes known, "
            f"accuracy on all seen {accuracy:.3f}"
        )
    print(f"checkpoint: {checkpoint}")
    return accuracies


if __name__ == "__main__":
    main()
