import numpy as np

from keras_incremental.checks import check_unit_count


class ExemplarMemory:
    """A class-balanced store of past samples under a fixed total budget.

    After each stage the budget is split evenly over all classes seen so far
    (the first classes in index order get the remainder), each class keeping a
    random subset of its samples; classes that arrived earlier give up samples
    as new classes arrive. Inputs are kept as NumPy arrays, so the memory's
    RAM is bounded by `memory_size` samples.

    Args:
        memory_size: Non-negative integer, the total number of samples kept
            over all classes. 0 keeps nothing.
        seed: Integer seed of the random selection. Defaults to `0`.

    Example:

    ```python
    memory = ExemplarMemory(memory_size=20)
    memory.update(x_stage, y_stage_indices)
    x_old, y_old = memory.samples()
    ```
    """

    def __init__(self, memory_size, seed=0):
        self.memory_size = check_unit_count(memory_size, "memory_size", 0)
        self.seed = seed
        self.updates_ = 0
        self.x_ = None
        self.y_ = np.zeros((0,), dtype="int64")

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

    def update(self, x, y):
        """Adds a stage's samples, then trims every class to its quota.

        Args:
            x: Array of inputs, first axis the samples.
            y: 1-D integer array of class indices, one per sample.
        """
        if self.memory_size == 0:
            return
        x = np.asarray(x)
        y = np.asarray(y, dtype="int64")
        if self.x_ is not None:
            x = np.concatenate([self.x_, x.astype(self.x_.dtype)], axis=0)
            y = np.concatenate([self.y_, y], axis=0)
        rng = np.random.default_rng([self.seed, self.updates_])
        keep = []
        for c, quota in self.quotas(np.unique(y)).items():
            members = np.flatnonzero(y == c)
            if members.size > quota:
                members = np.sort(rng.choice(members, quota, replace=False))
            keep.append(members)
        keep = np.concatenate(keep)
        self.x_ = x[keep]
        self.y_ = y[keep]
        self.updates_ += 1

    def samples(self):
        """The stored `(x, y)` arrays (empty ones when nothing is stored)."""
        return self.x_, self.y_

    def save(self, group):
        """Writes the memory into an open `h5py` group."""
        group.attrs["memory_size"] = self.memory_size
        group.attrs["seed"] = self.seed
        group.attrs["updates"] = self.updates_
        group.create_dataset("y", data=self.y_)
        if self.x_ is not None:
            group.create_dataset("x", data=self.x_)

    @classmethod
    def load(cls, group):
        """Reads a memory written by `save` from an open `h5py` group."""
        memory = cls(int(group.attrs["memory_size"]), int(group.attrs["seed"]))
        memory.updates_ = int(group.attrs["updates"])
        memory.y_ = np.asarray(group["y"][()], dtype="int64")
        if "x" in group:
            memory.x_ = np.asarray(group["x"][()])
        return memory
