"""Untrusted files: crafted zips, JSON, HDF5 and exemplar memories."""

import io
import os
import struct
import time
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

from keras_incremental.memory import ExemplarMemory
from keras_incremental.saving import safe_read

pytestmark = pytest.mark.backend_independent

SOURCE = "run/stages.keras/memory.h5"


def refused(call, *names):
    """Runs `call`, expecting a ValueError whose message holds `names`."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for name in names:
        assert str(name) in message, message
    return message


def h5_bytes(fill):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        fill(file)
    return buffer.getvalue()


def zip_file(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# Zip archives.


def test_open_zip_names_what_is_wrong(tmp_path):
    missing = tmp_path / "missing.keras"
    refused(lambda: safe_read.open_zip(missing, "checkpoint"), missing)
    assert "not found" in refused(
        lambda: safe_read.open_zip(missing, "checkpoint"), "checkpoint"
    )
    assert "a folder" in refused(
        lambda: safe_read.open_zip(tmp_path, "checkpoint"), tmp_path
    )
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    assert "empty file" in refused(
        lambda: safe_read.open_zip(empty, "checkpoint"), empty
    )
    text = tmp_path / "text.keras"
    text.write_text("not a zip at all")
    assert "not a zip archive" in refused(
        lambda: safe_read.open_zip(text, "checkpoint"), text
    )


def test_truncated_zip_is_refused(tmp_path):
    whole = zip_file(tmp_path / "whole.keras", {"a.json": b"{}" * 500})
    cut = tmp_path / "cut.keras"
    cut.write_bytes(whole.read_bytes()[:-30])
    message = refused(lambda: safe_read.open_zip(cut, "checkpoint"), cut)
    assert "truncated" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_permissions_are_not_reported_as_missing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    inside = zip_file(locked / "run.keras", {"a": b"1"})
    unreadable = zip_file(tmp_path / "unreadable.keras", {"a": b"1"})
    unreadable.chmod(0)
    locked.chmod(0)
    try:
        message = refused(lambda: safe_read.open_zip(inside, "checkpoint"))
        assert "permission denied" in message and "not found" not in message
        message = refused(
            lambda: safe_read.open_zip(unreadable, "checkpoint"), unreadable
        )
        assert "read permission" in message
    finally:
        locked.chmod(0o755)
        unreadable.chmod(0o644)


def test_read_member_reads_and_lists_missing_members(tmp_path):
    path = zip_file(
        tmp_path / "run.keras",
        {"state.json": b'{"a": 1}', "big": b"x" * 100_000},
        compression=zipfile.ZIP_DEFLATED,
    )
    with safe_read.open_zip(path, "checkpoint") as archive:
        assert safe_read.read_member(archive, "big", path, 1 << 20) == (
            b"x" * 100_000
        )
        message = refused(
            lambda: safe_read.read_member(archive, "memory.h5", path, 100),
            path,
            "memory.h5",
            "state.json",
        )
        assert "big" in message
        refused(
            lambda: safe_read.read_member(archive, "big", path, 1000),
            path,
            "big",
            "at most 1000 bytes",
        )


class _DeclaringArchive:
    """A zip whose member declares a size; reading it fails the test."""

    def __init__(self, file_size, compress_size):
        self.info = zipfile.ZipInfo("memory.h5")
        self.info.file_size = file_size
        self.info.compress_size = compress_size

    def getinfo(self, name):
        return self.info

    def open(self, info):
        raise AssertionError("read before the declared size was checked")


def test_huge_declared_members_are_refused_before_reading():
    archive = _DeclaringArchive(5 << 30, 1 << 20)
    refused(
        lambda: safe_read.read_member(archive, "memory.h5", "a.keras", 1 << 30),
        "a.keras",
        "memory.h5",
        "at most 1073741824 bytes",
    )
    # Without a limit, the expansion ratio still refuses a bomb.
    message = refused(
        lambda: safe_read.read_member(archive, "memory.h5", "a.keras", None),
        "a.keras",
        "memory.h5",
    )
    assert "decompression bomb" in message


def test_crc_and_deflate_errors_name_the_member(tmp_path):
    data = bytes(range(256)) * 8
    path = zip_file(tmp_path / "crc.keras", {"a.txt": b"ok", "b.bin": data})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("b.bin")
    raw = bytearray(path.read_bytes())
    # The local header: 30 bytes, then the name and extra field lengths.
    name_length, extra_length = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_length + extra_length
    raw[start + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with safe_read.open_zip(path, "checkpoint") as archive:
        assert safe_read.read_member(archive, "a.txt", path, 100) == b"ok"
        message = refused(
            lambda: safe_read.read_member(archive, "b.bin", path, 1 << 20),
            path,
            "b.bin",
        )
        assert "CRC" in message

    deflated = zip_file(
        tmp_path / "deflate.keras", {"b.bin": data}, zipfile.ZIP_DEFLATED
    )
    with zipfile.ZipFile(deflated) as archive:
        info = archive.getinfo("b.bin")
    raw = bytearray(deflated.read_bytes())
    start = info.header_offset + 30 + len("b.bin")
    raw[start : start + 8] = b"\xff" * 8
    deflated.write_bytes(bytes(raw))
    with safe_read.open_zip(deflated, "checkpoint") as archive:
        refused(
            lambda: safe_read.read_member(archive, "b.bin", deflated, 1 << 20),
            deflated,
            "b.bin",
            "damaged member",
        )


# JSON.


def test_json_is_strict():
    assert safe_read.read_json(b'{"a": [1, 2.5]}', "c.keras", "state.json")
    cases = {
        b'{"a": 1': "standard JSON",
        b'{"a": NaN}': "NaN",
        b'{"a": -Infinity}': "Infinity",
        b'{"a": "\xff"}': "UTF-8",
        b"[" * 100_000 + b"]" * 100_000: "too deep",
    }
    for data, problem in cases.items():
        refused(
            lambda data=data: safe_read.read_json(
                data, "c.keras", "state.json"
            ),
            "c.keras",
            "state.json",
            problem,
        )


# HDF5.


def test_bytes_that_are_not_hdf5():
    def call():
        with safe_read.h5_file(b"\x89HDF-no", "c.keras", "memory.h5"):
            pass

    assert "signature" in refused(call, "c.keras", "memory.h5")


def test_external_and_virtual_datasets_and_links_are_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"SECRET!!" * 16)

    def fill(file):
        file.create_dataset(
            "external", shape=(128,), dtype="u1", external=[(secret, 0, 128)]
        )
        file.create_dataset("plain", data=np.arange(4, dtype="float32"))
        layout = h5py.VirtualLayout(shape=(4,), dtype="float32")
        layout[:] = h5py.VirtualSource(file["plain"])
        file.create_virtual_dataset("virtual", layout)
        file["soft"] = h5py.SoftLink("/plain")
        file["elsewhere"] = h5py.ExternalLink(str(secret), "/x")

    data = h5_bytes(fill)
    with safe_read.h5_file(data, "c.keras", "memory.h5") as file:
        plain = safe_read.read_dataset(file, "plain", "c.keras", 4)
        np.testing.assert_array_equal(plain, np.arange(4))
        for key, problem in [
            ("external", "external storage"),
            ("virtual", "virtual dataset"),
            ("soft", "SoftLink"),
            ("elsewhere", "ExternalLink"),
        ]:
            refused(
                lambda key=key: safe_read.read_dataset(
                    file, key, "c.keras", None
                ),
                "c.keras",
                f"/{key}",
                problem,
            )
        refused(
            lambda: safe_read.h5_child(file, "soft", h5py.Group, "c.keras"),
            "SoftLink",
        )


def test_compressed_dataset_declaring_millions_of_rows():
    def fill(file):
        # 4M rows of 300 floats: 4.8 GB declared, a few KB stored.
        file.create_dataset(
            "x",
            shape=(4_000_000, 300),
            dtype="float32",
            chunks=(10_000, 300),
            compression="gzip",
        )
        small = file.create_dataset(
            "y",
            shape=(4_000_000,),
            dtype="int64",
            chunks=(100_000,),
            compression="gzip",
        )
        small[:100_000] = 0
        file.create_dataset(
            "wide_chunk",
            shape=(10,),
            maxshape=(None,),
            chunks=(10_000_000,),
            dtype="float32",
            compression="gzip",
        )

    data = h5_bytes(fill)
    assert len(data) < 1 << 20
    with safe_read.h5_file(data, "c.keras", "memory.h5") as file:
        tracemalloc.start()
        start = time.perf_counter()
        for key in ("x", "y", "wide_chunk"):
            refused(
                lambda key=key: safe_read.read_dataset(
                    file, key, "c.keras", 100
                ),
                "c.keras",
                f"/{key}",
                "at most",
            )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert time.perf_counter() - start < 1.0
        assert peak < 1 << 20
        # Without a limit, the bomb rule refuses the 4.8 GB one anyway.
        refused(
            lambda: safe_read.h5_child(file, "x", h5py.Dataset, "c.keras"),
            "/x",
            "shape bomb",
        )


def test_dtypes_and_dimensions_are_checked():
    def fill(file):
        file.create_dataset("text", data=["a", "bb"], dtype=h5py.string_dtype())
        file.create_dataset(
            "ragged",
            shape=(2,),
            dtype=h5py.vlen_dtype("int32"),
        )
        file.create_dataset("record", data=np.zeros(3, dtype="i4,f4"))
        file.create_dataset("floats", data=np.zeros((2, 3), dtype="float32"))
        file.create_group("group")

    data = h5_bytes(fill)
    with safe_read.h5_file(data, "c.keras", "memory.h5") as file:
        for key in ("text", "ragged", "record"):
            refused(
                lambda key=key: safe_read.read_dataset(
                    file, key, "c.keras", None, kinds="biufcOV"
                ),
                "c.keras",
                f"/{key}",
                "dtype",
            )
        refused(
            lambda: safe_read.read_dataset(
                file, "floats", "c.keras", None, kinds="iu"
            ),
            "/floats",
            "float32",
        )
        refused(
            lambda: safe_read.read_dataset(
                file, "floats", "c.keras", None, ndim=1
            ),
            "/floats",
            "1 dimensions",
        )
        refused(
            lambda: safe_read.read_dataset(file, "group", "c.keras", None),
            "/group",
            "Group",
        )
        refused(
            lambda: safe_read.read_dataset(file, "nothing", "c.keras", None),
            "/nothing",
            "nothing of that name",
        )
        assert safe_read.h5_child(file, "group", h5py.Dataset, "c", False) is (
            None
        )


def test_read_attr_gives_plain_values_of_the_right_kind():
    def fill(file):
        file.attrs["size"] = np.int64(7)
        file.attrs["name"] = "herding"
        file.attrs["raw"] = np.bytes_(b"random")
        file.attrs["many"] = np.arange(3)
        file.attrs["flag"] = True

    data = h5_bytes(fill)
    with safe_read.h5_file(data, "c.keras", "memory.h5") as file:
        size = safe_read.read_attr(file, "size", "c.keras", "int")
        assert size == 7 and type(size) is int
        assert safe_read.read_attr(file, "name", "c.keras", "str") == "herding"
        assert safe_read.read_attr(file, "raw", "c.keras", "str") == "random"
        assert safe_read.read_attr(file, "gone", "c", "int", default=3) == 3
        refused(
            lambda: safe_read.read_attr(file, "gone", "c.keras", "int"),
            "c.keras",
            "'gone'",
            "no such attribute",
        )
        for name, kind in [
            ("name", "int"),
            ("size", "str"),
            ("many", "int"),
            ("flag", "int"),
        ]:
            refused(
                lambda name=name, kind=kind: safe_read.read_attr(
                    file, name, "c.keras", kind
                ),
                "c.keras",
                f"'{name}'",
                kind,
            )


# Exemplar memory.


def memory_bytes(edit=None, **kwargs):
    """A saved memory of 6 exemplars (3 classes) with logits, then edited."""
    memory = ExemplarMemory(6, seed=2, **kwargs)
    x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    y = np.repeat([0, 1, 2], 10)
    memory.update(x, y, embed=lambda v: v, predict=lambda v: v[:, :3])

    def fill(file):
        group = file.create_group("memory")
        memory.save(group)
        if edit is not None:
            edit(group)

    return memory, h5_bytes(fill)


def load(data, **kwargs):
    with safe_read.h5_file(data, "run/stages.keras", "memory.h5") as file:
        group = safe_read.h5_child(file, "memory", h5py.Group, SOURCE)
        return ExemplarMemory.load(group, source=SOURCE, **kwargs)


def replace(key, value):
    def edit(group):
        del group[key]
        group.create_dataset(key, data=value)

    return edit


def test_memory_round_trip_through_a_checkpoint_zip(tmp_path):
    memory, data = memory_bytes(selection="herding")
    path = zip_file(tmp_path / "stages.keras", {"memory.h5": data})
    with safe_read.open_zip(path, "checkpoint") as archive:
        data = safe_read.read_member(archive, "memory.h5", path, 1 << 20)
    loaded = load(data, memory_size=6)
    assert (loaded.memory_size, loaded.selection, loaded.seed) == (
        6,
        "herding",
        2,
    )
    assert loaded.updates_ == memory.updates_ == 1
    for name in ("x_", "y_", "logits_", "logit_widths_"):
        a, b = getattr(loaded, name), getattr(memory, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    loaded.check_classes(3, SOURCE)
    refused(lambda: loaded.check_classes(2, SOURCE), SOURCE, "label 2")


def test_empty_memory_round_trip():
    def fill(file):
        ExemplarMemory(0).save(file.create_group("memory"))

    loaded = load(h5_bytes(fill), memory_size=0)
    assert len(loaded) == 0 and loaded.x_ is None and loaded.logits_ is None


def test_memory_attributes_are_validated():
    def set_attr(name, value):
        def edit(group):
            group.attrs[name] = value

        return edit

    def drop_attr(name):
        def edit(group):
            del group.attrs[name]

        return edit

    cases = [
        (drop_attr("memory_size"), "'memory_size'"),
        (drop_attr("seed"), "'seed'"),
        (drop_attr("selection"), "'selection'"),
        (drop_attr("updates"), "'updates'"),
        (set_attr("memory_size", "six"), "'memory_size'"),
        (set_attr("memory_size", -1), "memory_size=-1"),
        (set_attr("updates", -2), "updates=-2"),
        (set_attr("seed", 1.5), "'seed'"),
        (set_attr("selection", "nearest"), "selection='nearest'"),
        (set_attr("memory_size", 4), "at most memory_size=4"),
    ]
    for edit, part in cases:
        _, data = memory_bytes(edit)
        refused(lambda data=data: load(data), SOURCE, part)


def test_budget_in_the_file_must_match_the_run():
    _, data = memory_bytes()
    message = refused(lambda: load(data, memory_size=200), SOURCE)
    assert "disagrees with the run's settings" in message


def test_memory_arrays_are_validated():
    nan_x = np.zeros((6, 4), dtype="float32")
    nan_x[3, 1] = np.nan
    inf_logits = np.zeros((6, 3), dtype="float32")
    inf_logits[0, 0] = np.inf

    def drop(key):
        def edit(group):
            del group[key]

        return edit

    cases = [
        (replace("x", np.zeros((5, 4), "float32")), "one row per label (6)"),
        (replace("x", nan_x), "non-finite"),
        (replace("x", np.array(["a"] * 6, dtype="S1")), "/memory/x"),
        (replace("y", np.array([0, 0, 1, -1, 2, 2])), "label"),
        (replace("y", np.zeros(6, "float32")), "/memory/y"),
        (replace("y", np.zeros((6, 1), "int64")), "/memory/y"),
        (replace("logits", inf_logits), "non-finite"),
        (replace("logits", np.zeros((7, 3), "float32")), "/memory/logits"),
        (replace("logit_widths", np.full(6, 4)), "logit widths within [0, 3]"),
        (replace("logit_widths", np.full(6, -1)), "logit widths"),
        (drop("logit_widths"), "both 'logits' and 'logit_widths'"),
        (drop("x"), "a dataset 'x'"),
    ]
    for edit, part in cases:
        _, data = memory_bytes(edit)
        refused(lambda data=data: load(data), SOURCE, part)


def test_memory_over_budget_in_rows_is_refused_before_reading():
    def edit(group):
        del group["y"], group["x"]
        group.create_dataset(
            "y", shape=(4_000_000,), dtype="int64", compression="gzip"
        )
        group.create_dataset(
            "x", shape=(4_000_000, 300), dtype="float32", compression="gzip"
        )

    _, data = memory_bytes(edit)
    assert len(data) < 1 << 20
    tracemalloc.start()
    refused(lambda: load(data), SOURCE, "at most memory_size=6", "4000000")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_memory_with_an_external_dataset_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros((6, 4), "float32").tobytes())

    def edit(group):
        del group["x"]
        group.create_dataset(
            "x", shape=(6, 4), dtype="float32", external=[(secret, 0, 96)]
        )

    _, data = memory_bytes(edit)
    refused(lambda: load(data), SOURCE, "/memory/x", "external storage")
