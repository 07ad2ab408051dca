"""Ridge regression from sufficient statistics: the analytic head's math.

A linear head `W` on features `h` (with a constant 1 appended, the bias's
feature) fitted to one-hot targets `y` by ridge regression is
`W = (G + lambda I)^-1 Q`, with `G = sum(h^T h)` and `Q = sum(h^T y)` over
the samples. Both are sums, so statistics added stage by stage give the
joint fit on all the samples seen, in any order and any split.

The regularization `"auto"` minimizes generalized cross-validation (GCV,
Golub, Heath and Wahba 1979), an estimate of the leave-one-out squared
error that needs only `G`, `Q` and the sample count:

    GCV(lambda) = n * RSS(lambda) / (n - df(lambda))^2,
    df(lambda) = sum_i s_i / (s_i + lambda),
    RSS(lambda) = n - sum_ic P_ic^2 (s_i + 2 lambda) / (s_i + lambda)^2,

where `G = V diag(s) V^T` and `P = V^T Q` (the one-hot targets' squared
norm is `n`). It is a function of the statistics alone, so the same data
gives the same lambda however it was split into stages.
"""

import numpy as np

# The GCV grid: lambda = mean eigenvalue * 10**k, k from -8 to 2 in steps of
# 1/4. Relative to the spectrum's scale, so features of any magnitude get
# the same grid.
GRID_EXPONENTS = np.arange(-32, 9) / 4.0


class RidgeStatistics:
    """The sufficient statistics of a ridge head, in float64.

    Args:
        features: The width of the features (the head's input), without the
            constant feature that the statistics add for the bias.
        gram: Optional `(features + 1, features + 1)` array, `G`.
        cross: Optional `(features + 1, classes)` array, `Q`.
        counts: Optional `(classes,)` array, the samples seen per class.

    Example:

    ```python
    statistics = RidgeStatistics(64)
    statistics.grow(3)
    statistics.add(features, labels)  # (n, 64) floats, (n,) indices < 3
    kernel, bias, lam = statistics.solve("auto")
    ```
    """

    def __init__(self, features, gram=None, cross=None, counts=None):
        self.features = int(features)
        size = self.features + 1
        self.gram = np.zeros((size, size)) if gram is None else gram
        self.cross = np.zeros((size, 0)) if cross is None else cross
        self.counts = np.zeros((0,)) if counts is None else counts

    @property
    def classes(self):
        return self.cross.shape[1]

    @property
    def samples(self):
        return float(self.counts.sum())

    def copy(self):
        return RidgeStatistics(
            self.features,
            self.gram.copy(),
            self.cross.copy(),
            self.counts.copy(),
        )

    def grow(self, classes):
        """Widens `Q` and the counts to `classes` columns (new ones zero)."""
        missing = classes - self.classes
        if missing > 0:
            self.cross = np.pad(self.cross, ((0, 0), (0, missing)))
            self.counts = np.pad(self.counts, (0, missing))

    def add(self, features, labels):
        """Adds samples: `features` `(n, features)`, `labels` class indices
        `(n,)` below `classes`."""
        h = np.empty((len(features), self.features + 1))
        h[:, :-1] = features
        h[:, -1] = 1.0
        onehot = np.zeros((len(labels), self.classes))
        onehot[np.arange(len(labels)), labels] = 1.0
        self.gram += h.T @ h
        self.cross += h.T @ onehot
        self.counts += onehot.sum(axis=0)

    def solve(self, regularization):
        """The ridge head on the statistics.

        Args:
            regularization: A positive float, lambda, or `"auto"` (GCV).

        Returns:
            `(kernel, bias, lam)`: the `(features, classes)` kernel, the
            `(classes,)` bias and the lambda used.
        """
        if regularization == "auto":
            weights, lam = self._solve_gcv()
        else:
            lam = float(regularization)
            size = self.features + 1
            weights = np.linalg.solve(
                self.gram + lam * np.eye(size), self.cross
            )
        return weights[:-1], weights[-1], lam

    def _solve_gcv(self):
        s, v = np.linalg.eigh(self.gram)
        # Rounding leaves tiny negative eigenvalues of a singular `G`.
        s = np.maximum(s, 0.0)
        p = v.T @ self.cross
        lam = gcv_lambda(s, np.sum(p**2, axis=1), self.samples)
        return v @ (p / (s + lam)[:, None]), lam

    def check(self, where):
        """Raises `ValueError` (prefixed by `where`) unless the statistics
        are ones that samples could have made: shapes that agree, finite,
        `G` symmetric with a non-negative diagonal, whole non-negative
        counts, and the constant feature's sums equal to the counts."""
        size = self.features + 1
        problems = []
        if self.gram.shape != (size, size):
            problems.append(
                f"G of shape {self.gram.shape}, expected {(size, size)}"
            )
        if self.cross.shape != (size, len(self.counts)):
            problems.append(
                f"Q of shape {self.cross.shape}, expected "
                f"{(size, len(self.counts))}"
            )
        if problems:
            raise ValueError(f"{where}: {'; '.join(problems)}.")
        for name, value in (
            ("G", self.gram),
            ("Q", self.cross),
            ("counts", self.counts),
        ):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: {name} holds non-finite values.")
        n = self.samples
        tolerance = 1e-9 * max(1.0, n)
        if not np.allclose(self.gram, self.gram.T, rtol=1e-12, atol=0):
            raise ValueError(f"{where}: G is not symmetric.")
        diagonal = np.diag(self.gram)
        if np.any(diagonal < 0):
            raise ValueError(f"{where}: G has a negative diagonal entry.")
        if np.any(self.counts < 0) or np.any(
            self.counts != np.round(self.counts)
        ):
            raise ValueError(
                f"{where}: the class counts are not whole non-negative numbers."
            )
        # What any sum of h^T h and h^T y obeys (Cauchy-Schwarz): checks in
        # O(M^2) that refuse most matrices no samples could have made.
        slack = 1e-9 * max(1.0, float(np.max(diagonal, initial=0.0)))
        bound = np.sqrt(np.outer(diagonal, diagonal))
        if np.any(np.abs(self.gram) > bound * (1 + 1e-9) + slack):
            raise ValueError(
                f"{where}: G has an entry larger than its diagonal allows "
                "(|G_ij| <= sqrt(G_ii G_jj)); expected a sum of h^T h."
            )
        cross_bound = np.sqrt(np.outer(diagonal, np.maximum(self.counts, 0)))
        if np.any(np.abs(self.cross) > cross_bound * (1 + 1e-9) + slack):
            raise ValueError(
                f"{where}: Q has an entry larger than G and the counts "
                "allow (|Q_ic| <= sqrt(G_ii n_c)); expected a sum of h^T y."
            )
        if abs(self.gram[-1, -1] - n) > tolerance or not np.allclose(
            self.cross[-1], self.counts, rtol=0, atol=tolerance
        ):
            raise ValueError(
                f"{where}: the sample counts disagree with G and Q (the "
                "constant feature's sums); expected statistics of samples."
            )


def gcv_lambda(eigenvalues, energy, samples):
    """The lambda of `GRID_EXPONENTS` with the least GCV.

    Args:
        eigenvalues: `G`'s eigenvalues `s`, non-negative.
        energy: `sum_c P_ic^2` per eigenvalue (`P = V^T Q`).
        samples: The sample count `n` (the one-hot targets' squared norm).

    Returns:
        The lambda, a positive float.
    """
    scale = max(float(np.mean(eigenvalues)), np.finfo(float).tiny)
    lams = scale * 10.0**GRID_EXPONENTS
    s = eigenvalues[None, :]
    lam = lams[:, None]
    df = np.sum(s / (s + lam), axis=1)
    rss = samples - np.sum(energy * (s + 2 * lam) / (s + lam) ** 2, axis=1)
    # A grid point that fits as many parameters as samples has no estimate.
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = np.where(
            samples - df > 0.5,
            samples * np.maximum(rss, 0.0) / (samples - df) ** 2,
            np.inf,
        )
    # To 6 significant digits: the scale's last bits depend on the order
    # the samples were added in, which must not change lambda.
    return float(f"{lams[int(np.argmin(gcv))]:.6g}")


def pack_symmetric(matrix):
    """The upper triangle of a symmetric matrix, row by row (what a
    checkpoint stores of `G`: half the bytes)."""
    return matrix[np.triu_indices(len(matrix))]


def unpack_symmetric(values, size):
    """The symmetric `(size, size)` matrix `pack_symmetric` packed."""
    matrix = np.zeros((size, size))
    rows, columns = np.triu_indices(size)
    matrix[rows, columns] = values
    matrix[columns, rows] = values
    return matrix


def packed_size(size):
    """How many values `pack_symmetric` keeps of a `(size, size)` matrix."""
    return size * (size + 1) // 2
