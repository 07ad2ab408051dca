import math

import h5py
import numpy as np

from keras_incremental.memory.selection import SELECTIONS
from keras_incremental.memory.selection import check_selection
from keras_incremental.memory.selection import herding_order
from keras_incremental.memory.selection import random_order
from keras_incremental.saving import safe_read
from keras_incremental.utils.checks import check_unit_count


class ExemplarMemory:
    """A class-balanced store of past samples under a fixed total budget.

    After each stage the budget is split evenly over all classes seen so far
    (the first classes in index order get the remainder). Each class's
    samples are kept in priority order (random, or by herding in a feature
    space) and trimmed to their share, so classes that arrived earlier give
    up their least useful samples as new classes arrive. Inputs (and logits,
    when given) are kept as NumPy arrays: RAM is bounded by `memory_size`
    samples.

    Args:
        memory_size: Non-negative integer, the total number of samples kept
            over all classes. 0 keeps nothing.
        selection: `"random"` or `"herding"` (iCaRL: the samples whose mean
            feature stays closest to the class mean; needs `embed` in
            `update`). Defaults to `"random"`.
        seed: Integer seed of the random selection. Defaults to `0`.

    Example:

    ```python
    memory = ExemplarMemory(memory_size=20, selection="herding")
    memory.update(x_stage, y_stage_indices, embed=feature_model.predict)
    x_old, y_old = memory.samples()
    ```
    """

    def __init__(self, memory_size, selection="random", seed=0):
        self.memory_size = check_unit_count(memory_size, "memory_size", 0)
        self.selection = check_selection(selection)
        self.seed = seed
        self.updates_ = 0
        self.x_ = None
        self.y_ = np.zeros((0,), dtype="int64")
        self.logits_ = None
        self.logit_widths_ = np.zeros((0,), dtype="int64")

    def __len__(self):
        return int(self.y_.shape[0])

    @property
    def classes(self):
        """The class indices with at least one stored sample, sorted."""
        return np.unique(self.y_)

    def quotas(self, class_indices):
        """Samples allowed per class when `class_indices` share the budget."""
        class_indices = sorted(int(c) for c in class_indices)
        if not class_indices:
            return {}
        share, extra = divmod(self.memory_size, len(class_indices))
        return {
            c: share + (1 if i < extra else 0)
            for i, c in enumerate(class_indices)
        }

    def update(self, x, y, embed=None, predict=None):
        """Adds a stage's samples, then trims every class to its quota.

        Classes the stage brings samples of are ordered again over their
        stored and new samples; the others keep their order and lose their
        last samples when their quota shrinks.

        Args:
            x: Array of inputs, first axis the samples.
            y: 1-D integer array of class indices, one per sample.
            embed: Callable mapping inputs to 2-D features; required for
                `"herding"`. Defaults to `None`.
            predict: Optional callable mapping inputs to 2-D logits, stored
                for the kept samples (for logit replay). Defaults to `None`.

        Raises:
            ValueError: for `"herding"` without `embed`, or `x` and `y` of
                different lengths. The memory is unchanged.
        """
        if self.memory_size == 0:
            return
        x = np.asarray(x)
        y = np.asarray(y, dtype="int64")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                "Expected as many labels as samples. Received: "
                f"{x.shape[0]} samples and {y.shape[0]} labels"
            )
        if self.selection == "herding" and embed is None:
            raise ValueError(
                "Herding selection needs features: pass `embed`, a callable "
                "mapping inputs to features. Received: embed=None"
            )
        stored = len(self)
        if self.x_ is not None:
            x = np.concatenate([self.x_, x.astype(self.x_.dtype)], axis=0)
            y = np.concatenate([self.y_, y], axis=0)
        fresh = np.zeros(y.shape[0], dtype=bool)
        fresh[stored:] = True
        rng = np.random.default_rng([self.seed, self.updates_])
        keep = []
        for c, quota in self.quotas(np.unique(y)).items():
            members = np.flatnonzero(y == c)
            if fresh[members].any():
                members = members[self._order(x[members], quota, rng, embed)]
            keep.append(members[:quota])
        keep = np.concatenate(keep)
        new_logits = None
        if predict is not None or self.logits_ is not None:
            # Stored logits follow their samples (new ones without `predict`
            # get none), so they stay one row per stored sample.
            new_logits = self._logits_for(x, keep, fresh, predict)
        self.x_ = x[keep]
        self.y_ = y[keep]
        if new_logits is not None:
            self.logits_, self.logit_widths_ = new_logits
        self.updates_ += 1

    def _order(self, x, quota, rng, embed):
        if self.selection == "herding":
            return herding_order(np.asarray(embed(x)), count=quota)
        return random_order(x.shape[0], rng)

    def _logits_for(self, x, keep, fresh, predict):
        """Stored logits kept, new ones computed for the new samples."""
        new = keep[fresh[keep]]
        computed = None
        if new.size and predict is not None:
            computed = np.asarray(predict(x[new]))
        # A memory filled without logits (another strategy before) has
        # none for its stored samples: they replay their labels only.
        known = min(len(self), self.logit_widths_.shape[0])
        kept_widths = [int(self.logit_widths_[i]) for i in keep if i < known]
        width = max(
            kept_widths + ([computed.shape[1]] if computed is not None else [0])
        )
        logits = np.zeros((keep.size, width), dtype="float32")
        widths = np.zeros((keep.size,), dtype="int64")
        for row, index in enumerate(keep):
            if index < known and self.logits_ is not None:
                w = int(self.logit_widths_[index])
                logits[row, :w] = self.logits_[index, :w]
                widths[row] = w
        if computed is not None:
            rows = np.flatnonzero(fresh[keep])
            logits[rows, : computed.shape[1]] = computed
            widths[rows] = computed.shape[1]
        return logits, widths

    def samples(self):
        """The stored `(x, y)` arrays (empty ones when nothing is stored)."""
        return self.x_, self.y_

    def logit_targets(self, width):
        """Stored logits padded to `width` columns, and their 0/1 mask.

        Columns a sample's logits did not have (classes that came later) are
        0 with mask 0.
        """
        logits = np.zeros((len(self), width), dtype="float32")
        mask = np.zeros((len(self), width), dtype="float32")
        if self.logits_ is not None:
            for row, w in enumerate(self.logit_widths_):
                w = min(int(w), width)
                logits[row, :w] = self.logits_[row, :w]
                mask[row, :w] = 1.0
        return logits, mask

    def save(self, group):
        """Writes the memory into an open `h5py` group."""
        group.attrs["memory_size"] = self.memory_size
        group.attrs["selection"] = self.selection
        group.attrs["seed"] = self.seed
        group.attrs["updates"] = self.updates_
        group.create_dataset("y", data=self.y_)
        if self.x_ is not None:
            group.create_dataset("x", data=self.x_)
        if self.logits_ is not None:
            group.create_dataset("logits", data=self.logits_)
            group.create_dataset("logit_widths", data=self.logit_widths_)

    @classmethod
    def load(
        cls,
        group,
        memory_size=None,
        source="memory",
        sample_shape=None,
        max_width=None,
        max_sample_elements=None,
    ):
        """Reads a memory written by `save` from an open `h5py` group.

        The group is untrusted input: its attributes, the declared shapes
        and storage of its datasets (see
        `keras_incremental.saving.safe_read`) and then their values are
        checked before anything is built.

        Args:
            group: An open `h5py.Group`, as `save` wrote it.
            memory_size: Optional budget of the run that loads the memory;
                the budget in the file must equal it. Defaults to `None`,
                no check.
            source: The name of the file (and part) for messages. Defaults
                to `"memory"`.
            sample_shape: Optional shape of one sample (the model's input
                without the batch axis); the stored samples must have it,
                checked before they are read. Defaults to `None`, no check.
            max_width: Optional largest number of columns of the stored
                logits (the head's units), checked before they are read.
                Defaults to `None`, no check.
            max_sample_elements: Optional largest number of values in one
                stored sample, checked before they are read (for inputs of
                a free shape). Defaults to `None`, no check.

        Returns:
            An `ExemplarMemory`.

        Raises:
            ValueError: for a missing or invalid attribute, a budget other
                than `memory_size`, samples not of `sample_shape`, more
                exemplars than the budget, arrays whose rows disagree,
                labels that are not non-negative integers, inputs or logits
                that are not finite numbers, or logit widths beyond the
                stored logits.
        """
        path = source
        size = safe_read.read_attr(group, "memory_size", path, "int")
        selection = safe_read.read_attr(group, "selection", path, "str")
        seed = safe_read.read_attr(group, "seed", path, "int")
        updates = safe_read.read_attr(group, "updates", path, "int")
        if not all(0 <= value < 2**63 for value in (size, seed, updates)):
            raise _invalid(
                path,
                group,
                "`memory_size`, `seed` and `updates` in [0, 2**63)",
                f"memory_size={size}, seed={seed}, updates={updates}",
            )
        if selection not in SELECTIONS:
            raise _invalid(
                path,
                group,
                f"a selection among {list(SELECTIONS)}",
                f"selection={selection!r}",
            )
        if memory_size is not None and memory_size != size:
            raise _invalid(
                path,
                group,
                f"the run's budget memory_size={memory_size}; the budget in "
                "the file disagrees with the run's settings",
                f"memory_size={size}",
            )

        y_set = safe_read.h5_child(group, "y", h5py.Dataset, path)
        rows = _rows(y_set, path)
        if rows > size:
            raise _invalid(
                path,
                group,
                f"at most memory_size={size} exemplars",
                f"{rows} labels in '{y_set.name}'",
            )
        datasets = {"y": y_set}
        for key in ("x", "logits", "logit_widths"):
            if group.get(key, getlink=True) is not None:
                datasets[key] = safe_read.h5_child(
                    group, key, h5py.Dataset, path
                )
                if _rows(datasets[key], path) != rows:
                    raise _invalid(
                        path,
                        group,
                        f"one row per label ({rows}) in '{group.name}/{key}'",
                        f"shape {datasets[key].shape}",
                    )
        if (
            sample_shape is not None
            and "x" in datasets
            and tuple(datasets["x"].shape[1:]) != tuple(sample_shape)
        ):
            raise _invalid(
                path,
                group,
                f"samples of shape {tuple(sample_shape)} (the model's input)"
                f" in '{group.name}/x'",
                f"shape {datasets['x'].shape}",
            )
        if (
            max_sample_elements is not None
            and "x" in datasets
            and math.prod(datasets["x"].shape[1:]) > max_sample_elements
        ):
            raise _invalid(
                path,
                group,
                f"at most {max_sample_elements} values per sample in "
                f"'{group.name}/x'",
                f"shape {datasets['x'].shape}",
            )
        if (
            max_width is not None
            and "logits" in datasets
            and (
                len(datasets["logits"].shape) != 2
                or datasets["logits"].shape[1] > max_width
            )
        ):
            raise _invalid(
                path,
                group,
                f"logits of at most {max_width} columns (the head's units) "
                f"in '{group.name}/logits'",
                f"shape {datasets['logits'].shape}",
            )
        if rows and "x" not in datasets:
            raise _invalid(
                path, group, f"a dataset 'x' for its {rows} labels", "none"
            )
        if ("logits" in datasets) != ("logit_widths" in datasets):
            raise _invalid(
                path,
                group,
                "both 'logits' and 'logit_widths', or neither",
                f"only {'logits' if 'logits' in datasets else 'logit_widths'}",
            )

        y = _read(y_set, path, "iu", ndim=1)
        if rows and (y.min() < 0 or y.max() > np.iinfo("int64").max):
            raise _invalid(
                path,
                group,
                f"class indices >= 0 in '{y_set.name}'",
                f"labels from {y.min()} to {y.max()}",
            )
        memory = cls(size, selection=selection, seed=seed)
        memory.updates_ = updates
        memory.y_ = y.astype("int64")
        if "x" in datasets:
            memory.x_ = _read(datasets["x"], path, "iuf")
        if "logits" in datasets:
            logits = _read(datasets["logits"], path, "f", ndim=2)
            widths = _read(datasets["logit_widths"], path, "iu", ndim=1)
            if rows and (widths.min() < 0 or widths.max() > logits.shape[1]):
                raise _invalid(
                    path,
                    group,
                    f"logit widths within [0, {logits.shape[1]}] (the "
                    "stored logits' columns)",
                    f"widths from {widths.min()} to {widths.max()}",
                )
            memory.logits_ = logits
            memory.logit_widths_ = widths.astype("int64")
        return memory

    def check_classes(self, n_classes, source):
        """Raises unless every stored label is below `n_classes`.

        Args:
            n_classes: The number of classes the run knows.
            source: The name of the file the memory came from, for messages.

        Raises:
            ValueError: when a stored label is `n_classes` or more.
        """
        if len(self) and int(self.y_.max()) >= n_classes:
            raise ValueError(
                f"Could not use the exemplar memory of '{source}': expected "
                f"class indices below {n_classes}, the number of classes the "
                f"run knows. Received: label {int(self.y_.max())}"
            )


def _invalid(path, group, expected, received):
    return ValueError(
        f"Could not read the exemplar memory '{group.name}' of '{path}': "
        f"expected {expected}. Received: {received}"
    )


def _rows(dataset, path):
    """The declared first dimension of a dataset (its metadata only)."""
    shape = dataset.shape
    if not shape:
        raise ValueError(
            f"Could not read dataset '{dataset.name}' of '{path}': expected "
            f"one row per exemplar. Received: shape {shape}"
        )
    return shape[0]


def _read(dataset, path, kinds, ndim=None):
    """Reads `dataset` (no chunk larger than itself), refusing NaN and
    infinite values."""
    array = safe_read.read_array(
        dataset, path, math.prod(dataset.shape), kinds=kinds, ndim=ndim
    )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"Could not read dataset '{dataset.name}' of '{path}': expected "
            "finite values (a NaN or infinite exemplar would poison "
            f"training). Received: {int((~np.isfinite(array)).sum())} "
            "non-finite values"
        )
    return array
