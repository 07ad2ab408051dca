import ast
import importlib
import inspect
import pathlib
import subprocess
import sys
import textwrap
import types

import pytest

import keras_incremental as ki

pytestmark = pytest.mark.backend_independent

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_in_one_place():
    assert ki.__version__
    config = (ROOT / "setup.cfg").read_text()
    assert "version = attr: keras_incremental.__version__" in config


def test_no_pickle_and_no_private_keras_imports_outside_compat():
    for path in (ROOT / "keras_incremental").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        assert "allow_pickle=True" not in text, path
        if path.name != "compat.py":
            assert "keras.src" not in text, path


# Files that may still reach private attributes of other objects, each with
# the reason; none today. Every module of the package reaches Keras
# internals through `compat.py` and the state of our own objects through
# their public methods and properties.
PRIVATE_ACCESS_ALLOWED = set()

_REFLECTION = ("getattr", "setattr", "hasattr", "delattr")


def _is_private(name):
    """A name with a leading underscore that is not a dunder (`__x__`)."""
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )


def _package_files():
    for path in sorted((ROOT / "keras_incremental").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative != "keras_incremental/compat.py":
            yield relative, ast.parse(path.read_text(), filename=relative)


def _self_names(function):
    """`self` and `cls`, the first argument of a method."""
    arguments = function.args.posonlyargs + function.args.args
    return {arguments[0].arg} & {"self", "cls"} if arguments else set()


def _own_instances(function, class_name):
    """Local names bound to an instance the class itself makes
    (`x = cls(...)`, `x = type(self)(...)`, `x = ClassName(...)`)."""
    names = set()
    for node in ast.walk(function):
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
        ):
            continue
        made = node.value.func
        if (isinstance(made, ast.Name) and made.id in ("cls", class_name)) or (
            isinstance(made, ast.Call)
            and isinstance(made.func, ast.Name)
            and made.func.id == "type"
        ):
            names.add(node.targets[0].id)
    return names


def _stored_in(tree):
    """The private names stored on `self`/`cls`, or defined, in `tree`."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ) and _is_private(node.attr):
            names.add(node.attr)
        elif isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ) and _is_private(node.name):
            names.add(node.name)
    return names


def _stored_privates(klass):
    """The private attributes a class defines: in its namespace, or stored
    on `self`/`cls` anywhere in its source."""
    names = {name for name in vars(klass) if _is_private(name)}
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # Built-in or compiled.
        return names
    return names | _stored_in(ast.parse(source))


def _ours(klass):
    return klass.__module__.partition(".")[0] == "keras_incremental"


def _foreign_privates_on_self(relative, tree, module):
    """`self._x` in our subclasses of Keras (or other foreign) classes where
    `_x` is the base class's: stored by the base, or not by our classes.

    `module` is the imported module of `tree`, or a function that imports
    it (called only for a file with a class that has bases)."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not node.bases:
            continue
        if callable(module):
            module = module()
        klass = getattr(module, node.name)
        foreign = [
            base
            for base in klass.__mro__[1:]
            if base is not object and not _ours(base)
        ]
        if not foreign:
            continue
        own = _stored_in(node).union(
            *(_stored_privates(c) for c in klass.__mro__[1:] if _ours(c))
        )
        theirs = {base: _stored_privates(base) for base in foreign}
        for sub in ast.walk(node):
            if not (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Name)
                and sub.value.id in ("self", "cls")
                and _is_private(sub.attr)
            ):
                continue
            owners = [b for b, names in theirs.items() if sub.attr in names]
            if owners or sub.attr not in own:
                owner = (owners or foreign)[0].__qualname__
                found.append(
                    f"{relative}:{sub.lineno}: {ast.unparse(sub)} ({owner}'s)"
                )
    return found


def _private_accesses(relative, tree):
    """Private attributes of other objects and modules reached in a file."""
    found = []
    # For each method: its `self`, which may reach any private name (see
    # `_foreign_privates_on_self` for those of a base class), and the
    # instances it makes of its own class, which may reach the class's own.
    methods = {}
    for klass in ast.walk(tree):
        if isinstance(klass, ast.ClassDef):
            own = _stored_in(klass)
            for item in klass.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods[item] = (
                        _self_names(item),
                        _own_instances(item, klass.name),
                        own,
                    )

    def reaches(value, attribute, scope):
        selves, instances, own = scope
        return isinstance(value, ast.Name) and (
            value.id in selves or (value.id in instances and attribute in own)
        )

    def visit(node, scope):
        scope = methods.get(node, scope)
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not reaches(node.value, node.attr, scope):
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not reaches(node.args[0], node.args[1].value, scope)
        ):
            found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(
                        f"{relative}:{node.lineno}: from {node.module} "
                        f"import {alias.name}"
                    )
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, (set(), set(), set()))
    return found


def _violations():
    found = {}
    for relative, tree in _package_files():
        name = ".".join(pathlib.PurePosixPath(relative).with_suffix("").parts)
        found[relative] = _private_accesses(
            relative, tree
        ) + _foreign_privates_on_self(
            relative, tree, lambda name=name: importlib.import_module(name)
        )
    return found


def test_no_private_attribute_of_another_object_outside_compat():
    found = _violations()
    reported = [
        line
        for relative, lines in found.items()
        if relative not in PRIVATE_ACCESS_ALLOWED
        for line in lines
    ]
    assert not reported, (
        "Private attributes of other objects reached outside "
        "`keras_incremental/compat.py`. Reach a Keras internal through a "
        "`compat` function (with its test in tests/test_compat.py), and "
        "our own objects' state through a public method or property:\n"
        + "\n".join(reported)
    )
    stale = [path for path in PRIVATE_ACCESS_ALLOWED if not found.get(path)]
    assert not stale, (
        f"{stale} reach no private attribute of another object any more; "
        "remove them from `PRIVATE_ACCESS_ALLOWED`."
    )


def test_private_access_check_finds_each_kind():
    source = textwrap.dedent(
        """
        from keras_incremental.models.growth import _grow
        import keras


        def f(head, optimizer):
            head._free_width = True
            getattr(optimizer, "_learning_rate")
            return optimizer._tracker.untrack


        class Head(keras.layers.Dense):
            def __init__(self):
                super().__init__(2)
                self._mine = 1

            def call(self, inputs):
                self._tracker.lock()
                return self._mine, self._kernel

            @classmethod
            def make(cls):
                head = cls()
                head._mine = 2
                other = Head()
                other._tracker = None
                return head
        """
    )
    tree = ast.parse(source)
    found = [line.partition(": ")[2] for line in _private_accesses("x", tree)]
    assert found == [
        "from keras_incremental.models.growth import _grow",
        "head._free_width",
        "getattr(optimizer, '_learning_rate')",
        "optimizer._tracker",
        "other._tracker",
    ]
    module = types.ModuleType("check")
    exec(compile(tree, "x", "exec"), vars(module))
    found = [
        line.partition(": ")[2]
        for line in _foreign_privates_on_self("x", tree, module)
    ]
    # `_mine` is the class's own; `_tracker` and `_kernel` are Keras's,
    # although `Head` could store them too.
    assert sorted(found) == [
        "self._kernel (Dense's)",
        "self._tracker (Layer's)",
    ]
