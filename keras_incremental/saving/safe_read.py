"""Reading untrusted files: zip archives, JSON and HDF5, checked first.

Every file this package loads (stage checkpoints, `.keras` transfer sources)
may have been crafted. The readers here check what a file declares before
reading it, and turn every failure into a `ValueError` that names the file,
the part (zip member, HDF5 dataset or attribute) and the problem:

- zip: a member's declared size against a limit and its compressed size
  (decompression bombs); CRC and decompression errors, which `zipfile`
  reports only when the member is read.
- JSON: strict UTF-8, standard JSON only (no `NaN`/`Infinity`), bounded
  nesting.
- HDF5: no soft or external links, and datasets stored inside the file
  only (no external or virtual storage: those read other local files);
  declared sizes against a limit and the bytes actually stored; plain
  numeric dtypes only (no object, variable-length or compound data).

Example:

```python
with safe_read.open_zip(path, "checkpoint") as archive:
    data = safe_read.read_member(archive, "memory.h5", path, 1 << 30)
with safe_read.h5_file(data, path, "memory.h5") as file:
    y = safe_read.read_dataset(file, "y", path, 1000, kinds="iu", ndim=1)
```
"""

import contextlib
import io
import json
import lzma
import math
import os
import stat
import zipfile
import zlib

import h5py
import numpy as np

from keras_incremental.utils.messages import preview

# As in Keras's own loader: a zip member or an HDF5 dataset that declares
# far more bytes than it stores is refused (a decompression or shape bomb).
BOMB_FLOOR_BYTES = 1 << 32
ZIP_MAX_EXPANSION = 100
H5_MAX_EXPANSION = 1000
_CHUNK_BYTES = 1 << 20
# Errors `zipfile` raises on a damaged member: bad CRC or header, truncated
# or corrupt compressed data, an unsupported compression method or
# encryption (RuntimeError), failures of the bz2 (OSError) or lzma codecs.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    lzma.LZMAError,
)
# Errors h5py raises on damaged or unreadable HDF5 structures.
_H5_ERRORS = (OSError, KeyError, RuntimeError, TypeError)
_STORAGE = {
    h5py.h5d.COMPACT: "compact",
    h5py.h5d.CONTIGUOUS: "contiguous",
    h5py.h5d.CHUNKED: "chunked",
}
_ATTR_KINDS = {"int": "iu", "float": "fiu", "str": "SUO"}


def _error(path, part, expected, received):
    return ValueError(
        f"Could not read {part} of '{path}': expected {expected}. "
        f"Received: {received}"
    )


def open_zip(path, what):
    """Opens a zip archive for reading, or says plainly why it cannot.

    Args:
        path: A string or `os.PathLike`, the archive's path.
        what: A short description of the expected file for messages, such
            as `"checkpoint"`.

    Returns:
        An open `zipfile.ZipFile`; use it as a context manager.

    Raises:
        ValueError: when nothing exists at `path`, it cannot be reached or
            read (permissions), it is a folder or not a regular file, or it
            is not a whole zip archive (another format, empty, truncated).
    """
    path = os.fsdecode(os.fspath(path))

    def refuse(received):
        return ValueError(
            f"Could not open {what} '{path}': expected a readable zip "
            f"archive. Received: {received}"
        )

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise refuse("nothing exists there (file not found)") from None
    except PermissionError:
        raise refuse(
            "a path in a folder that may not be searched (permission denied)"
        ) from None
    except OSError as error:
        raise refuse(f"a path that fails ({error})") from None
    if stat.S_ISDIR(mode):
        raise refuse("a folder")
    if not stat.S_ISREG(mode):
        raise refuse("a special file, not a regular file")
    try:
        return zipfile.ZipFile(path)
    except PermissionError:
        raise refuse("a file without read permission") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise refuse(_not_zip(path, error)) from None


def _not_zip(path, error):
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        head = b""
    if not head:
        return "an empty file"
    if head == b"PK\x03\x04":
        return f"a truncated or damaged zip archive ({error})"
    return f"a file that is not a zip archive (it starts with {head!r})"


def read_member(archive, name, path, max_bytes, max_expansion=None):
    """Reads one member of an open zip archive, within a size limit.

    The declared size is checked before anything is decompressed; the data
    is then read in chunks, and reading stops if more comes out than was
    declared.

    Args:
        archive: An open `zipfile.ZipFile` (from `open_zip`).
        name: The member's name in the archive.
        path: The archive's path, for messages.
        max_bytes: The largest uncompressed size accepted, or `None` for
            no limit beyond the bomb rule.
        max_expansion: Optional largest ratio of the uncompressed to the
            compressed size (past 1 MiB), for members of dense numbers that
            barely compress: a tighter bomb rule than the default. Defaults
            to `None`.

    Returns:
        The member's bytes.

    Raises:
        ValueError: when the member is missing, declares more than
            `max_bytes` or expands far beyond its compressed size, or its
            data is damaged (CRC or decompression error).
    """
    part = f"member '{name}'"
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _error(
            path,
            part,
            "a member of that name",
            f"an archive holding {preview(archive.namelist())}",
        ) from None
    declared = info.file_size
    if max_bytes is not None and declared > max_bytes:
        raise _error(
            path,
            part,
            f"at most {max_bytes} bytes",
            f"a member declaring {declared} bytes",
        )
    if max_expansion is not None and declared > (
        max_expansion * info.compress_size + (1 << 20)
    ):
        raise _error(
            path,
            part,
            f"at most {max_expansion} times its compressed size (dense "
            "numbers)",
            f"{declared} bytes declared in {info.compress_size} stored",
        )
    if (
        declared > BOMB_FLOOR_BYTES
        and declared > ZIP_MAX_EXPANSION * info.compress_size
    ):
        raise _error(
            path,
            part,
            f"at most {ZIP_MAX_EXPANSION} times its compressed size",
            f"{declared} bytes declared in {info.compress_size} stored "
            "(a potential decompression bomb)",
        )
    chunks = []
    total = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                total += len(chunk)
                if total > declared:
                    raise _error(
                        path,
                        part,
                        f"the {declared} bytes it declares",
                        "more data than declared",
                    )
                chunks.append(chunk)
    except _ZIP_ERRORS as error:
        raise _error(
            path,
            part,
            "intact data",
            f"a damaged member ({type(error).__name__}: {error})",
        ) from None
    if total != declared:
        raise _error(
            path,
            part,
            f"the {declared} bytes it declares",
            f"{total} bytes",
        )
    return b"".join(chunks)


def _refuse_constant(name):
    raise ValueError(f"the non-standard constant {name}")


def read_json(data, path, part, allow_nan=False):
    """Parses strict JSON: UTF-8, no `NaN` or `Infinity`, bounded nesting.

    Args:
        data: The bytes to parse.
        path: The file's path, for messages.
        part: The part of the file the bytes come from (a member name).
        allow_nan: Whether `NaN` and `Infinity` are read (as Python
            floats), for files of a format that wrote them. Defaults to
            `False`.

    Returns:
        The parsed object.

    Raises:
        ValueError: for bytes that are not UTF-8, invalid or non-standard
            JSON, or nesting too deep to parse.
    """
    where = f"JSON '{part}'"
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _error(path, where, "UTF-8 text", f"{error}") from None
    try:
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _error(
            path, where, "standard JSON", "nesting too deep to parse"
        ) from None
    except ValueError as error:
        raise _error(path, where, "standard JSON", f"{error}") from None


@contextlib.contextmanager
def h5_file(data, path, part):
    """Opens HDF5 bytes read-only, in memory.

    Args:
        data: The bytes of an HDF5 file.
        path: The file's path, for messages.
        part: The part of the file the bytes come from (a member name).

    Yields:
        An `h5py.File` open for reading; closed when the block ends.

    Raises:
        ValueError: when the bytes are not an HDF5 file h5py can open.
    """
    try:
        file = h5py.File(io.BytesIO(data), "r")
    except (*_H5_ERRORS, ValueError) as error:
        raise _error(
            path, f"HDF5 '{part}'", "an HDF5 file", f"{error}"
        ) from None
    try:
        yield file
    finally:
        file.close()


def h5_child(group, key, kind, path, required=True):
    """`group[key]`, refusing links to elsewhere and outside data.

    Soft links (which may point anywhere in the file) and external links
    (other files) are refused, and a dataset's storage is checked with
    `check_dataset`.

    Args:
        group: An open `h5py.Group`.
        key: The child's name in `group`; a path of names separated by `/`
            is followed one checked step at a time.
        kind: `h5py.Group` or `h5py.Dataset`.
        path: The file's path, for messages.
        required: Whether a missing child, or one of another kind, is an
            error; when `False` it gives `None`. Defaults to `True`.

    Returns:
        The child, or `None` (see `required`).

    Raises:
        ValueError: for a link, outside storage, or (when `required`) a
            missing child or one of another kind.
    """
    *parents, key = key.split("/")
    for parent in parents:
        group = h5_child(group, parent, h5py.Group, path, required)
        if group is None:
            return None
    name = f"{group.name.rstrip('/')}/{key}"
    noun = "group" if kind is h5py.Group else "dataset"
    try:
        link = group.get(key, getlink=True)
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            raise _error(
                path,
                f"'{name}'",
                f"a {noun} stored in the file",
                f"a link ({type(link).__name__})",
            )
        child = None if link is None else group[key]
    except _H5_ERRORS as error:
        raise _error(
            path, f"'{name}'", f"a readable {noun}", f"{error}"
        ) from None
    if not isinstance(child, kind):
        if not required:
            return None
        received = "nothing of that name"
        if child is not None:
            received = f"a {type(child).__name__}"
        raise _error(path, f"'{name}'", f"a {noun}", received)
    if kind is h5py.Dataset:
        check_dataset(child, path)
    return child


def check_dataset(dataset, path, max_elements=None):
    """Checks a dataset's storage and declared size, reading no data.

    Args:
        dataset: An open `h5py.Dataset`.
        path: The file's path, for messages.
        max_elements: Optional largest number of elements accepted.
            Defaults to `None`, no limit beyond the bomb rule.

    Returns:
        `None`.

    Raises:
        ValueError: for storage other than compact, contiguous or chunked
            inside the file (external or virtual), a null dataspace, more
            than `max_elements` elements (or chunks larger than that), or a
            declared size far beyond the bytes stored.
    """
    part = f"dataset '{dataset.name}'"
    try:
        plist = dataset.id.get_create_plist()
        layout = plist.get_layout()
        external = plist.get_external_count()
        virtual = dataset.is_virtual
        shape, chunks = dataset.shape, dataset.chunks
        itemsize = dataset.dtype.itemsize
        stored = dataset.id.get_storage_size()
    except _H5_ERRORS as error:
        raise _error(path, part, "a readable dataset", f"{error}") from None
    if external or virtual or layout not in _STORAGE:
        received = "external storage (the bytes of another file)"
        if virtual or layout == h5py.h5d.VIRTUAL:
            received = "a virtual dataset (data mapped from other datasets)"
        elif not external:
            received = f"an unknown storage layout {layout}"
        raise _error(path, part, "data stored inside the file", received)
    if shape is None:
        raise _error(path, part, "an array", "a null dataspace (no shape)")
    # A chunk is decompressed whole: it counts even where larger.
    elements = max(math.prod(shape), math.prod(chunks) if chunks else 0)
    if max_elements is not None and elements > max_elements:
        raise _error(
            path,
            part,
            f"at most {max_elements} elements",
            f"shape {shape}" + (f" in chunks {chunks}" if chunks else ""),
        )
    declared = elements * itemsize
    if declared > BOMB_FLOOR_BYTES and declared > H5_MAX_EXPANSION * stored:
        raise _error(
            path,
            part,
            f"at most {H5_MAX_EXPANSION} times the bytes it stores",
            f"{declared} bytes declared in {stored} stored (a potential "
            "shape bomb)",
        )


def read_dataset(group, key, path, max_elements, kinds=None, ndim=None):
    """Reads `group[key]` as an array after checking what it declares.

    Args:
        group: An open `h5py.Group`.
        key: The dataset's name in `group`.
        path: The file's path, for messages.
        max_elements: The largest number of elements accepted, or `None`.
        kinds: Optional NumPy dtype kinds accepted, such as `"iuf"`.
            Defaults to `None`, `"biufc"`.
        ndim: Optional exact number of dimensions. Defaults to `None`.

    Returns:
        A `np.ndarray`.

    Raises:
        ValueError: see `h5_child`, `check_dataset` and `read_array`.
    """
    dataset = h5_child(group, key, h5py.Dataset, path)
    return read_array(dataset, path, max_elements, kinds=kinds, ndim=ndim)


def read_array(dataset, path, max_elements=None, kinds=None, ndim=None):
    """Reads an open dataset after `check_dataset` and dtype checks.

    Object, variable-length and compound dtypes are always refused.

    Args:
        dataset: An open `h5py.Dataset`.
        path: The file's path, for messages.
        max_elements: Optional largest number of elements accepted.
            Defaults to `None`.
        kinds: Optional NumPy dtype kinds accepted (`"V"` allows opaque
            data, such as Keras's bfloat16). Defaults to `None`, `"biufc"`.
        ndim: Optional exact number of dimensions. Defaults to `None`.

    Returns:
        A `np.ndarray`.

    Raises:
        ValueError: for refused storage or sizes, a dtype of another kind,
            another number of dimensions, or data that fails to read.
    """
    check_dataset(dataset, path, max_elements)
    part = f"dataset '{dataset.name}'"
    kinds = "biufc" if kinds is None else kinds
    dtype = dataset.dtype
    plain = (
        dtype.kind in kinds
        and dtype.kind != "O"
        and dtype.names is None
        and dtype.subdtype is None
        and h5py.check_vlen_dtype(dtype) is None
    )
    if not plain:
        raise _error(
            path, part, f"data of dtype kind in '{kinds}'", f"dtype {dtype}"
        )
    if ndim is not None and len(dataset.shape) != ndim:
        raise _error(path, part, f"{ndim} dimensions", f"shape {dataset.shape}")
    try:
        return np.asarray(dataset[()])
    except _H5_ERRORS as error:
        raise _error(path, part, "readable data", f"{error}") from None


_MISSING = object()


def read_attr(group, name, path, kinds, default=_MISSING):
    """Reads a scalar attribute as a plain Python value.

    Args:
        group: An open `h5py` group or dataset.
        name: The attribute's name.
        path: The file's path, for messages.
        kinds: `"int"`, `"float"` or `"str"`, or a tuple of them.
        default: Optional value returned when the attribute is missing.
            Defaults to none: a missing attribute is an error.

    Returns:
        An `int`, `float` or `str` (bytes are decoded as UTF-8).

    Raises:
        ValueError: for a missing attribute (without `default`), one that
            is not a scalar of an accepted kind, or unreadable.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    part = f"attribute '{name}' of '{group.name}'"
    expected = f"a scalar of kind {' or '.join(kinds)}"
    try:
        if name not in group.attrs:
            if default is _MISSING:
                raise _error(path, part, expected, "no such attribute")
            return default
        attr = group.attrs.get_id(name)
        shape, dtype = attr.shape, attr.dtype
        allowed = "".join(_ATTR_KINDS[kind] for kind in kinds)
        if shape != () or dtype.kind not in allowed or dtype.names:
            raise _error(path, part, expected, f"dtype {dtype}, shape {shape}")
        if dtype.kind == "O" and h5py.check_string_dtype(dtype) is None:
            raise _error(path, part, expected, f"dtype {dtype}")
        value = group.attrs[name]
    except _H5_ERRORS as error:
        raise _error(path, part, expected, f"{error}") from None
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise _error(path, part, "UTF-8 text", f"{error}") from None
    if isinstance(value, np.generic):
        value = value.item()
    return value
