"""Weight transfer between models by layer name.

`keras.Model.load_weights(..., skip_mismatch=True)` matches layers by their
class ordinal (the n-th `Dense` of one model to the n-th `Dense` of the other)
and skips any layer whose shapes changed. After a layer is inserted, or the
classifier head has grown, it silently puts weights in the wrong layers and
drops the head. `transfer_weights` matches layers by `name` instead, and gives
a grown head its old columns.
"""

import collections
import contextlib
import dataclasses
import os

import h5py
import keras
import ml_dtypes
import numpy as np
from keras import ops

from keras_incremental.layers import ExpandableDense
from keras_incremental.models.heads import find_layer
from keras_incremental.saving import safe_read
from keras_incremental.utils.checks import check_path
from keras_incremental.utils.messages import preview

_WEIGHTS_MEMBER = "model.weights.h5"


@dataclasses.dataclass
class TransferReport:
    """What `transfer_weights` did to each layer.

    Layers are named by their `name`, or by the names of the models and
    layers that hold them, joined with `/`, where a name alone is ambiguous.

    Attributes:
        copied: Names of the layers whose weights were all copied as they are.
        grown: For each layer that received part of its output columns (a
            grown or reordered head), a dict with `source_units`,
            `target_units`, `matched_by` (`"class name"` or `"position"`),
            `columns` (`[source_column, target_column]` pairs), `new` (the
            target columns, or class names, that kept their values) and
            `dropped` (the source columns, or class names, left out).
        skipped: For each layer present on both sides that was left
            unchanged, the reason.
        missing: Names of the layers with weights that the source lacks;
            they keep their values.
        unused: Names of the source's layers with weights that no layer of
            the model matched.
    """

    copied: list = dataclasses.field(default_factory=list)
    grown: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    missing: list = dataclasses.field(default_factory=list)
    unused: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        """The report as plain lists and dicts, ready for `json.dump`."""
        return {
            "copied": list(self.copied),
            "grown": {
                name: _jsonable(info) for name, info in self.grown.items()
            },
            "skipped": dict(self.skipped),
            "missing": list(self.missing),
            "unused": list(self.unused),
        }

    def __str__(self):
        rows = [(name, "copied", "") for name in self.copied]
        rows += [
            (name, "grown", _describe_growth(info))
            for name, info in self.grown.items()
        ]
        rows += [(name, "skipped", why) for name, why in self.skipped.items()]
        rows += [
            (name, "missing", "not in the source; kept its values")
            for name in self.missing
        ]
        rows += [(name, "unused", "only in the source") for name in self.unused]
        title = (
            f"TransferReport: {len(self.copied)} copied, {len(self.grown)} "
            f"grown, {len(self.skipped)} skipped, {len(self.missing)} missing"
            f" in source, {len(self.unused)} unused"
        )
        if not rows:
            return title
        header = ("layer", "status", "detail")
        widths = [max(len(row[i]) for row in [header] + rows) for i in range(2)]
        lines = [title]
        for row in [header] + rows:
            line = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}"
            lines.append(line.rstrip())
        return "\n".join(lines)


def transfer_weights(
    source,
    model,
    source_classes=None,
    target_classes=None,
    layers=None,
    head=None,
):
    """Copies weights into `model` by layer name, growing the head's columns.

    Every layer of `model` (nested models and the inner layers of composite
    layers included) that has weights is matched to the source's layer of the
    same `name`. Unlike `model.load_weights(..., skip_mismatch=True)`, which
    matches layers by class ordinal, a newly inserted layer does not shift
    the others' weights.

    - A layer whose weights have the same shapes on both sides gets all of
      them, to the bit.
    - A `Dense` (or `ExpandableDense`) layer whose number of units differs,
      such as a head that grew, gets the source's kernel and bias columns.
      With `source_classes` and `target_classes`, the column of each class
      goes to the column of the same class name in the model, whatever the
      order; the model's classes that the source lacks keep their values and
      the source's classes that the model lacks are dropped. Without class
      names, the source's columns go to the leading columns of the model's
      layer; a layer smaller than the source's is then skipped.
    - Layers whose other dimensions differ are skipped, with the reason.

    Everything is checked before any weight is written: on an error the model
    is unchanged. The optimizer state and compiled functions are not touched.

    A `.keras` file is not deserialised: its weights are read directly from
    the archive's `model.weights.h5` (each layer's variables are saved under
    its name), so the source's custom layers need not be importable and no
    code from the file runs.

    Args:
        source: The path of a `.keras` file, or a built `keras.Model`.
        model: The built `keras.Model` that receives the weights.
        source_classes: Optional sequence of the class names of the source
            head's output units, in order. Give it together with
            `target_classes`. Defaults to `None`.
        target_classes: Optional sequence of the class names of `model`'s
            head output units, in order. Defaults to `None`.
        layers: Optional list of the names (or layers) of `model` to transfer;
            naming a nested model or composite layer selects every layer
            inside it. Defaults to `None`, all layers.
        head: The layer of `model` that the class names describe: a name, a
            layer, or `None` for the model's last `ExpandableDense`, else its
            last `Dense`. Defaults to `None`.

    Returns:
        A `TransferReport` listing the layers copied, grown, skipped (with
        reasons), missing in the source and unused in the source.

    Raises:
        TypeError: for a `source` that is neither a path nor a Keras model, a
            `model` that is not a Keras model, class names that are not a
            sequence, or a `head` that is not a `Dense` layer.
        ValueError: for a path that does not exist or is not a `.keras` file
            with a `model.weights.h5`, a damaged or crafted file (links,
            data outside the file, declared sizes far beyond the stored
            bytes; see `keras_incremental.saving.safe_read`), no layer
            matched by name (nothing would be copied), a model or source
            that is not built,
            class name lists given alone, with duplicates or with a length
            other than the head's units, or unknown layers in `layers` or
            `head`.

    Example:

    ```python
    # Stage 1 trained a model with 3 classes and saved it.
    old.save("stage1.keras")
    # The new model has one more hidden layer and 4 classes, in another order.
    new = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu", name="hidden"),
        keras.layers.Dense(256, activation="relu", name="adapter"),
        keras_incremental.ExpandableDense(4, name="head"),
    ])
    report = keras_incremental.transfer_weights(
        "stage1.keras",
        new,
        source_classes=["cat", "dog", "bird"],
        target_classes=["bird", "cat", "fish", "dog"],
    )
    print(report)  # hidden: copied, head: grown, adapter: missing in source
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected `model` to be a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    _check_built(model, "model")
    source_classes = _check_classes(source_classes, "source_classes")
    target_classes = _check_classes(target_classes, "target_classes")
    if (source_classes is None) != (target_classes is None):
        given = "source_classes" if target_classes is None else "target_classes"
        raise ValueError(
            "Expected both `source_classes` and `target_classes`, or neither; "
            f"received only `{given}`. Pass the class names of both heads to "
            "match columns by name, or neither to keep their positions."
        )

    targets = [entry for entry in _walk_model(model) if entry.store]
    _name_entries(targets)
    head_entry = _find_head(model, targets, head)
    selected = _select(model, targets, layers)
    if target_classes is not None:
        if head_entry is None:
            raise ValueError(
                f"Class names were given, but model '{model.name}' has no "
                "`Dense` or `ExpandableDense` head to apply them to; expected "
                "one. Received: target_classes="
                f"{preview(target_classes)}"
            )
        _check_count(target_classes, "target_classes", head_entry, "model")

    with _source_entries(source) as sources:
        _name_entries(sources)
        report = TransferReport()
        plan = _plan(
            selected, sources, head_entry, source_classes, target_classes
        )
        writes = []
        matched = set()
        for entry, outcome, detail, store, found in plan:
            if found is not None:
                matched.add(id(found))
            if outcome == "copied":
                report.copied.append(entry.label)
            elif outcome == "grown":
                report.grown[entry.label] = detail
            elif outcome == "skipped":
                report.skipped[entry.label] = detail
            else:
                report.missing.append(entry.label)
            if store is not None:
                writes.append((entry.layer, store))
        report.unused = [
            item.label for item in sources if id(item) not in matched
        ]
        if selected and sources and not (report.copied or report.grown):
            # Auto-generated names (`dense_2` against `dense`) match nothing:
            # a silent no-op would look like a transfer.
            raise ValueError(
                f"No layer of model '{model.name}' matched a layer of the "
                "source by name, so no weight would be copied; expected the "
                "layers to transfer to have the same names on both sides. "
                f"Received model layers {preview(report.missing)} and source "
                f"layers {preview(report.unused)}. Name the layers alike, or "
                "start from the trained model itself with "
                "`IncrementalModel.adopt(source, classes)`."
            )
        # Everything is read and checked: only now is the model written.
        for layer, store in writes:
            layer.load_own_variables(store)
    return report


class _Entry:
    """A layer with weights: its names from the top and its saved variables.

    `store` maps the keys of `save_own_variables` to arrays (or HDF5
    datasets of the file at `path`, read when needed).
    """

    def __init__(self, chain, store, layer=None, path=None):
        self.chain = chain
        self.store = store
        self.layer = layer
        self.path = path
        self.label = chain[-1]

    @property
    def shapes(self):
        return {key: tuple(value.shape) for key, value in self.store.items()}


def _name_entries(entries):
    """Labels each entry by its name, or its full chain where ambiguous."""
    counts = collections.Counter(entry.chain[-1] for entry in entries)
    for entry in entries:
        if counts[entry.chain[-1]] > 1:
            entry.label = "/".join(entry.chain)


def _check_built(model, argument):
    if not model.built:
        raise ValueError(
            f"Expected a built model for `{argument}`; model '{model.name}' "
            "is not built and has no weights yet. Build it first, with "
            "`keras.Input` in the model, `model.build(input_shape)`, or by "
            "calling it on a batch of data."
        )


def _check_classes(classes, argument):
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(
        classes, collections.abc.Iterable
    ):
        raise TypeError(
            f"Expected `{argument}` to be a list of class names, one per "
            f"output unit of the head, in order. Received: {argument}="
            f"{classes!r} of type {type(classes).__name__}"
        )
    classes = [_plain(name) for name in classes]
    try:
        counts = collections.Counter(classes)
    except TypeError as error:
        raise TypeError(
            f"Expected the names in `{argument}` to be hashable (strings or "
            f"integers). Received: {argument}={preview(classes)}"
        ) from error
    duplicates = [name for name, count in counts.items() if count > 1]
    if duplicates:
        raise ValueError(
            f"Expected unique class names in `{argument}`; {duplicates} "
            "appear more than once, so their columns cannot be told apart. "
            f"Received: {argument}={preview(classes)}"
        )
    return classes


def _check_count(classes, argument, entry, side):
    units = _units(entry)
    if units is not None and len(classes) != units:
        raise ValueError(
            f"Expected one name in `{argument}` per output unit of the "
            f"{side}'s head '{entry.label}', which has {units} units. "
            f"Received {len(classes)} names: {argument}={preview(classes)}"
        )


def _units(entry):
    """The output units of a `Dense`-like entry: its kernel's last axis."""
    kernel = entry.store.get("0")
    if kernel is None or len(kernel.shape) == 0:
        return None
    return int(kernel.shape[-1])


def _plain(name):
    return name.item() if isinstance(name, np.generic) else name


def _walk_model(model):
    """The layers inside `model` with their name chains, depth first.

    Models are walked through `.layers`; other layers through the layers they
    hold as attributes (as `MultiHeadAttention` holds its projections), the
    way `model.save` reaches them.
    """
    seen = {id(model)}

    def walk(parent, chain):
        for child in _children(parent):
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_chain = chain + (child.name,)
            store = {}
            child.save_own_variables(store)
            yield _Entry(child_chain, store, child)
            yield from walk(child, child_chain)

    return list(walk(model, ()))


def _children(layer):
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    children = []
    for value in vars(layer).values():
        if isinstance(value, dict):
            value = list(value.values())
        items = value if isinstance(value, (list, tuple)) else [value]
        children.extend(
            item
            for item in items
            if isinstance(item, keras.layers.Layer) and item is not layer
        )
    return children


def _find_head(model, targets, head):
    if head is None:
        for kind in (ExpandableDense, keras.layers.Dense):
            found = [
                entry for entry in targets if isinstance(entry.layer, kind)
            ]
            if found:
                return found[-1]
        return None
    layer = find_layer(
        model,
        head,
        "head",
        [entry.layer for entry in targets],
        "layer with weights",
    )
    if not isinstance(layer, keras.layers.Dense):
        raise TypeError(
            f"Layer '{layer.name}' is a `{type(layer).__name__}`; expected a "
            "`Dense` or `ExpandableDense` head, whose output units the class "
            "names describe."
        )
    return next(entry for entry in targets if entry.layer is layer)


def _select(model, targets, layers):
    if layers is None:
        return targets
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    if not isinstance(layers, collections.abc.Iterable):
        raise TypeError(
            "Expected `layers` to be a list of layer names or layers, or "
            f"`None`. Received: layers={layers!r} of type "
            f"{type(layers).__name__}"
        )
    everything = list(_walk_model(model))
    known_names = {entry.layer.name for entry in everything}
    known_ids = {id(entry.layer) for entry in everything}
    names = set()
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            if id(item) not in known_ids:
                raise ValueError(
                    f"Layer '{item.name}' is not part of model "
                    f"'{model.name}'; expected layers of the model. Received:"
                    f" layers={preview(layers)}"
                )
            names.add(item.name)
        elif isinstance(item, str):
            if item not in known_names:
                raise ValueError(
                    f"No layer named '{item}' in model '{model.name}'; "
                    f"expected names among {preview(sorted(known_names), 50)}."
                    f" Received: layers={preview(layers)}"
                )
            names.add(item)
        else:
            raise TypeError(
                "Expected `layers` to hold layer names or layers. Received "
                f"{item!r} of type {type(item).__name__} in layers="
                f"{preview(layers)}"
            )
    return [entry for entry in targets if any(n in names for n in entry.chain)]


def _match(target, by_name):
    """The source entry for `target`, or a reason why there is none.

    Returns `(entry, None)`, `(None, None)` when the source has no layer of
    that name, or `(None, reason)` when several could be meant.
    """
    candidates = by_name.get(target.chain[-1], [])
    for depth in range(2, len(target.chain) + 2):
        if len(candidates) <= 1:
            break
        narrowed = [
            c for c in candidates if c.chain[-depth:] == target.chain[-depth:]
        ]
        if not narrowed:
            break
        candidates = narrowed
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, None
    where = ", ".join("/".join(c.chain) for c in candidates)
    return None, (
        f"{len(candidates)} layers of the source could be meant ({where}); "
        "give the layers unique names"
    )


def _plan(targets, sources, head, source_classes, target_classes):
    """Decides, and reads, what each target layer receives.

    Returns a list of `(entry, outcome, detail, store, source_entry)`, with
    the new `store` to load into the entry's layer (or `None`).
    """
    by_name = collections.defaultdict(list)
    for entry in sources:
        by_name[entry.chain[-1]].append(entry)
    matches = [(target,) + _match(target, by_name) for target in targets]
    claims = collections.Counter(
        id(found) for _, found, _ in matches if found is not None
    )

    if source_classes is not None and head is not None:
        head_match = next(
            (found for target, found, _ in matches if target is head), None
        )
        if head_match is not None:
            _check_count(source_classes, "source_classes", head_match, "source")

    plan = []
    for target, found, ambiguity in matches:
        if found is not None and claims[id(found)] > 1:
            plan.append(
                (
                    target,
                    "skipped",
                    f"several layers of the model are named "
                    f"'{target.chain[-1]}' and the source has one; give the "
                    "layers unique names",
                    None,
                    found,
                )
            )
            continue
        if ambiguity is not None:
            plan.append((target, "skipped", ambiguity, None, None))
            continue
        if found is None:
            plan.append((target, "missing", None, None, None))
            continue
        classes = None
        if target is head and source_classes is not None:
            classes = (source_classes, target_classes)
        plan.append(_plan_layer(target, found, classes) + (found,))
    return plan


def _plan_layer(target, found, classes):
    target_shapes = target.shapes
    source_shapes = found.shapes
    if set(target_shapes) != set(source_shapes):
        return (
            target,
            "skipped",
            f"holds {len(target_shapes)} variables {_shape_list(target)}, "
            f"the source's layer {len(source_shapes)} "
            f"{_shape_list(found)}",
            None,
        )
    if target_shapes == source_shapes:
        if classes is None:
            return target, "copied", None, _read_store(found)
        mapping = _columns_by_name(*classes)
        units = _units(target)
        if len(mapping["columns"]) == units and all(
            s == t for s, t in mapping["columns"]
        ):
            return target, "copied", None, _read_store(found)
        return _grow(target, found, mapping)

    layer = target.layer
    if not isinstance(layer, keras.layers.Dense):
        return target, "skipped", _mismatch(target, found), None
    if layer.quantization_mode is not None:
        return (
            target,
            "skipped",
            f"quantized ({layer.quantization_mode}); its columns cannot be "
            f"moved. {_mismatch(target, found)}",
            None,
        )
    target_units = _units(target)
    source_units = _units(found)
    for key in target_shapes:
        t_shape, s_shape = target_shapes[key], source_shapes[key]
        if (
            t_shape[:-1] != s_shape[:-1]
            or t_shape[-1] != target_units
            or s_shape[-1] != source_units
        ):
            return target, "skipped", _mismatch(target, found), None
    if classes is not None:
        return _grow(target, found, _columns_by_name(*classes))
    if target_units < source_units:
        return (
            target,
            "skipped",
            f"has {target_units} units, the source's layer {source_units}; "
            "without class names there is no telling which columns to keep. "
            "Pass `source_classes` and `target_classes` to match them by name",
            None,
        )
    mapping = {
        "matched_by": "position",
        "columns": [[i, i] for i in range(source_units)],
        "new": list(range(source_units, target_units)),
        "dropped": [],
    }
    return _grow(target, found, mapping)


def _columns_by_name(source_classes, target_classes):
    position = {name: i for i, name in enumerate(target_classes)}
    columns = [
        [i, position[name]]
        for i, name in enumerate(source_classes)
        if name in position
    ]
    known = set(source_classes)
    return {
        "matched_by": "class name",
        "columns": columns,
        "new": [name for name in target_classes if name not in known],
        "dropped": [name for name in source_classes if name not in position],
    }


def _grow(target, found, mapping):
    source_store = _read_store(found)
    store = {}
    columns = np.asarray(mapping["columns"], dtype=np.intp).reshape(-1, 2)
    source_index, target_index = columns[:, 0], columns[:, 1]
    for key, value in target.store.items():
        array = np.array(ops.convert_to_numpy(value))
        array[..., target_index] = source_store[key][..., source_index]
        store[key] = array
    info = {
        "source_units": int(_units(found)),
        "target_units": int(_units(target)),
        **mapping,
    }
    return target, "grown", info, store


def _mismatch(target, found):
    return (
        f"weights of shapes {_shape_list(target)} in the model and "
        f"{_shape_list(found)} in the source; only the output units of a "
        "`Dense` layer may differ"
    )


def _shape_list(entry):
    return [shape for _, shape in sorted(entry.shapes.items())]


def _read_store(entry):
    return {key: _read(value, entry.path) for key, value in entry.store.items()}


def _read(value, path):
    if not isinstance(value, h5py.Dataset):
        return np.asarray(ops.convert_to_numpy(value))
    dtype = safe_read.read_attr(value, "dtype", path, "str", default=None)
    if dtype != "bfloat16":
        return safe_read.read_array(value, path)
    # Keras saves bfloat16 as 2-byte opaque data, marked by this attribute.
    array = safe_read.read_array(value, path, kinds="V")
    if array.dtype.itemsize != 2:
        raise ValueError(
            f"Could not read dataset '{value.name}' of '{path}': expected "
            "2-byte bfloat16 data, as its `dtype` attribute says. Received: "
            f"dtype {array.dtype}"
        )
    return array.view(ml_dtypes.bfloat16)


@contextlib.contextmanager
def _source_entries(source):
    """Yields the source's layers with weights; files are closed after."""
    if isinstance(source, keras.Model):
        _check_built(source, "source")
        yield [entry for entry in _walk_model(source) if entry.store]
        return
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "Expected `source` to be the path of a `.keras` file or a "
            f"`keras.Model`. Received: source={source!r} of type "
            f"{type(source).__name__}"
        )
    path = check_path(
        source,
        "source",
        ".keras",
        hint="Such a file is written by `model.save('name.keras')`. For a "
        "`.weights.h5` file, build the old model, `load_weights` into it and "
        "pass that model.",
    )
    with safe_read.open_zip(path, "`.keras` file `source`") as archive:
        if _WEIGHTS_MEMBER not in archive.namelist():
            raise ValueError(
                f"Expected a `{_WEIGHTS_MEMBER}` in the `.keras` archive "
                f"'{path}', as `model.save` writes it; found "
                f"{preview(archive.namelist())}. Load the model with "
                "`keras.saving.load_model` and pass it as `source`."
            )
        data = safe_read.read_member(archive, _WEIGHTS_MEMBER, path, None)
    where = f"{path}/{_WEIGHTS_MEMBER}"
    with safe_read.h5_file(data, path, _WEIGHTS_MEMBER) as h5_file:
        yield _walk_h5(h5_file, where)


def _walk_h5(h5_file, path):
    """The layers saved in a `model.weights.h5`, with their name chains.

    Keras saves each layer's variables in a `vars` group whose `name`
    attribute is the layer's name; the groups of inner layers sit below it.
    The optimizer's group is left out. Links are refused (see
    `safe_read.h5_child`), and so is a group reached twice (a hard link
    cycle would otherwise never end).
    """
    entries = []
    seen = set()

    def walk(group, chain, top):
        if group.id in seen:
            raise ValueError(
                f"Could not read group '{group.name}' of '{path}': expected "
                "each group once, as `model.save` writes them. Received: a "
                "group reached by two paths (a hard link)"
            )
        seen.add(group.id)
        for key in group:
            if key == "vars" or (top and key == "optimizer"):
                continue
            child = safe_read.h5_child(group, key, h5py.Group, path, False)
            if child is None:
                continue
            child_chain = chain
            if "vars" in child:
                variables = safe_read.h5_child(child, "vars", h5py.Group, path)
                name = safe_read.read_attr(
                    variables, "name", path, "str", default=key
                )
                child_chain = chain + (name,)
                store = {}
                for item in variables:
                    dataset = safe_read.h5_child(
                        variables, item, h5py.Dataset, path, False
                    )
                    if dataset is not None:
                        store[item] = dataset
                if store:
                    entries.append(_Entry(child_chain, store, path=path))
            walk(child, child_chain, False)

    try:
        walk(h5_file, (), True)
    except RecursionError:
        raise ValueError(
            f"Could not read '{path}': expected groups nested as `model.save`"
            " writes them. Received: groups nested too deep to walk"
        ) from None
    return entries


def _describe_growth(info):
    source, target = info["source_units"], info["target_units"]
    text = f"{source} -> {target} units"
    if info["matched_by"] == "position":
        if source:
            text += f"; source columns to columns 0-{source - 1}"
    else:
        text += f"; {len(info['columns'])} columns matched by class name"
    if info["new"]:
        text += f"; kept {preview(info['new'])}"
    if info["dropped"]:
        text += f"; dropped {preview(info['dropped'])}"
    return text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
