"""Exemplar selection: the order in which a class's samples are kept.

A selection returns the indices of a class's samples in priority order; the
memory keeps the first `quota` of them, so shrinking a class's share as new
classes arrive drops the least useful exemplars first (as in iCaRL).
"""

import numpy as np

SELECTIONS = ("random", "herding")


def check_selection(selection):
    """Returns `selection` if it names a known selection, or raises."""
    if selection not in SELECTIONS:
        raise ValueError(
            f"Unknown exemplar selection {selection!r}; expected one of "
            f"{list(SELECTIONS)}. Received: selection={selection!r}"
        )
    return selection


def random_order(count, rng):
    """A random priority order of `count` samples."""
    return rng.permutation(count)


def herding_order(features, count=None):
    """Orders samples by herding: each pick keeps the mean of the picked
    features closest to the class mean (iCaRL's exemplar selection).

    Features are L2-normalised first. Ties go to the lowest index.

    Args:
        features: 2-D array, one feature vector per sample of one class.
        count: How many samples to order; the rest are dropped. Defaults
            to all of them.

    Returns:
        1-D integer array of sample indices, the best exemplar first.

    Example:

    ```python
    herding_order(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # array([2, 0, 1]): (1, 1) is nearest the mean, then the lower index.
    ```

    References:
        - [Rebuffi et al., 2017](https://arxiv.org/abs/1611.07725), iCaRL:
          Incremental Classifier and Representation Learning.
        - [Welling, 2009](https://dl.acm.org/doi/10.1145/1553374.1553517),
          Herding Dynamical Weights to Learn.
    """
    features = np.asarray(features, dtype="float64")
    if features.ndim != 2:
        raise ValueError(
            "Expected 2-D features (samples x dimensions) for herding. "
            f"Received: shape={features.shape}"
        )
    total = features.shape[0]
    count = total if count is None else min(int(count), total)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = features / np.maximum(norms, 1e-12)
    target = features.mean(axis=0)
    picked = []
    running = np.zeros_like(target)
    available = np.ones(total, dtype=bool)
    for k in range(1, count + 1):
        distances = np.linalg.norm(target - (running + features) / k, axis=1)
        distances[~available] = np.inf
        best = int(np.argmin(distances))
        picked.append(best)
        running += features[best]
        available[best] = False
    return np.asarray(picked, dtype="int64")
