"""The package's import order (docs/architecture.md): every module imports
only modules of its own rank or below, so that data flows one way and each
folder can be read without the ones above it."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_incremental"

# Ranks, from the bottom; a module takes the rank of its longest matching
# prefix. The order and its reasons are in docs/architecture.md.
RANKS = {
    "compat": 0,
    "utils": 0,
    "layers": 1,
    # Low-level parts that the layers above share: file I/O, the untrusted
    # readers, optimizer nesting and slot copies, the data path.
    "saving.files": 2,
    "saving.safe_read": 2,
    "saving.portable": 2,
    "optimizers.nesting": 2,
    "optimizers.slots": 2,
    "data": 2,
    "models.graph": 2,
    "models": 3,
    "optimizers": 4,
    "memory": 5,
    "strategies": 6,
    "saving": 7,
    "metrics": 7,
    "callbacks": 8,
    "bench": 9,
    "demo": 9,
    "cli": 9,
    "__init__": 9,
    # Old import paths kept for user code: re-exports on top of everything.
    "serving": 9,
    "transfer": 9,
    "patterns": 9,
    "multiplier_optimizer": 9,
}


def _rank(module):
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANKS:
            return RANKS[prefix]
    raise AssertionError(
        f"Module keras_incremental.{module} has no rank in RANKS; give it "
        "one (and its place in docs/architecture.md)."
    )


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(relative.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def _imports(path):
    """The package modules `path` imports (`from keras_incremental.x import
    y` counts as `x.y` when `y` is a module, else as `x`)."""
    modules = {name for name, _ in _modules()}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_incremental."):
                    yield alias.name[len("keras_incremental.") :]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "keras_incremental":
                base = ""
            elif node.module.startswith("keras_incremental."):
                base = node.module[len("keras_incremental.") :]
            else:
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}" if base else alias.name
                yield child if child in modules else base or alias.name


@pytest.mark.backend_independent
def test_every_module_has_a_rank():
    for name, _ in _modules():
        _rank(name)


@pytest.mark.backend_independent
def test_imports_go_down_the_order():
    upward = []
    for name, path in _modules():
        if name == "":
            continue
        for imported in _imports(path):
            if _rank(imported) > _rank(name):
                upward.append(
                    f"{name} (rank {_rank(name)}) imports "
                    f"{imported} (rank {_rank(imported)})"
                )
    assert not upward, "Imports against the order:\n" + "\n".join(upward)


@pytest.mark.backend_independent
def test_the_order_is_the_documented_one():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for prefix in RANKS:
        path = PACKAGE / prefix.replace(".", "/")
        shown = (
            f"`{prefix.replace('.', '/')}/`"
            if path.is_dir()
            else (f"`{prefix.replace('.', '/')}.py`")
        )
        assert shown in text, f"docs/architecture.md does not name {shown}"


@pytest.mark.backend_independent
def test_an_upward_import_is_found(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from keras_incremental.callbacks import options\n"
        "from keras_incremental import strategies\n"
        "import keras_incremental.models.heads\n"
    )
    assert sorted(_imports(probe)) == [
        "callbacks.options",
        "models.heads",
        "strategies",
    ]
    assert _rank("callbacks.options") > _rank("layers.expandable_dense")
