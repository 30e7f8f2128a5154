"""Each DVC stage lists exactly the project code it runs as deps, so incremental `dvc repro` is right.

A stage's code is the import closure of the `python -m <module>` commands it runs, found statically with
`ast` over the project's own packages: `import` / `from ... import` anywhere in a file (inside functions
too, relative ones included), the package `__init__.py` files those imports execute, and the
"package.module:function" strings that `fan_out` hands to Prefect workers. Each file of the closure must
be covered by a dep (the file itself or a folder above it), and each code dep must be reached.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
INTERPOLATION = re.compile(r"\$\{\s*([^{}]+?)\s*\}")
MODULE_RUN = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
JOB_STRING = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
MISSING = object()


@dataclass(frozen=True)
class Stage:
    """One concrete DVC stage: foreach expanded, `${...}` resolved where params.yaml has the value."""

    name: str
    cmd: str
    deps: tuple[str, ...]


# --- dvc.yaml ------------------------------------------------------------------------------------------


def lookup(context: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key path (digits index lists), or MISSING."""
    node: Any = context
    for key in dotted.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return MISSING
    return node


def interpolate(text: str, context: dict[str, Any]) -> str:
    """Replace each `${key.path}` that resolves to a scalar; leave the others as opaque text."""

    def replace(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        if value is MISSING or isinstance(value, dict | list):
            return match.group(0)
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    return INTERPOLATION.sub(replace, text)


def foreach_items(spec: Any, params: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name suffix, key, item) per iteration of a foreach: a list, a dict or a `${...}` into params.yaml."""
    if isinstance(spec, str):
        match = INTERPOLATION.fullmatch(spec.strip())
        assert match, f"foreach {spec!r} is neither a list, a dict nor a ${{...}} reference"
        spec = lookup(params, match.group(1))
        assert spec is not MISSING, f"foreach {match.group(0)}: params.yaml has no {match.group(1)!r}"
    if isinstance(spec, dict):
        return [(str(key), key, item) for key, item in spec.items()]
    assert isinstance(spec, list), f"foreach over {spec!r}"
    scalar = (str, int, float, bool)
    return [(str(item) if isinstance(item, scalar) else str(i), i, item) for i, item in enumerate(spec)]


def concrete_stage(name: str, body: dict[str, Any], context: dict[str, Any]) -> Stage:
    """A stage with its cmd (a string or a list of commands) and deps interpolated from context."""
    cmd = body.get("cmd", "")
    cmd = " && ".join(cmd) if isinstance(cmd, list) else str(cmd)
    deps = tuple(interpolate(str(dep), context) for dep in body.get("deps") or [])
    return Stage(name=name, cmd=interpolate(cmd, context), deps=deps)


def expand_stages(dvc: dict[str, Any], params: dict[str, Any]) -> list[Stage]:
    """The concrete stages of a dvc.yaml: plain ones as they are, `foreach`/`do` ones as `name@item`."""
    stages = []
    for name, body in (dvc.get("stages") or {}).items():
        if "foreach" not in body:
            stages.append(concrete_stage(name, body, params))
            continue
        for suffix, key, item in foreach_items(body["foreach"], params):
            context = {**params, "item": item, "key": key}
            stages.append(concrete_stage(f"{name}@{suffix}", body["do"], context))
    return stages


def stage_modules(cmd: str) -> list[str]:
    """The modules a command runs with `python -m` (one per invocation, e.g. joined by `&&`)."""
    return MODULE_RUN.findall(cmd)


# --- import closure ------------------------------------------------------------------------------------


def module_file(root: Path, module: str) -> Path | None:
    """The file that defines `module` under root (`a/b/__init__.py` before `a/b.py`), if there is one."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
        if candidate.is_file():
            return candidate
    return None


def is_type_checking(test: ast.expr) -> bool:
    """Whether an `if` test is `TYPE_CHECKING` / `typing.TYPE_CHECKING` (its body never runs)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under `node`, except the bodies of `if TYPE_CHECKING:` blocks."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child.test):
            for sub in child.orelse:
                yield from runtime_nodes(sub)
        else:
            yield from runtime_nodes(child)


def referenced_modules(root: Path, file: Path) -> Iterator[str]:
    """Absolute module names a file imports or names in a "module:function" string (may not all exist).

    `from a.b import c` yields both `a.b` and `a.b.c`: `c` may be a submodule or an attribute.
    """
    package = file.relative_to(root).parts[:-1]
    for node in runtime_nodes(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.level - 1 > len(package):
                continue
            parts = list(package[: len(package) - node.level + 1]) if node.level else []
            base = ".".join(parts + (node.module.split(".") if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = JOB_STRING.fullmatch(node.value.strip())
            if match:
                yield match.group(1)


def import_closure(root: Path, modules: Iterable[str], packages: Iterable[str]) -> dict[Path, Path | None]:
    """Files importing `modules` executes, within `packages` under root, to a fixed point.

    Importing `a.b.c` executes `a/__init__.py` and `a/b/__init__.py` too. Maps each file to the file that
    first reached it (breadth first, so chains are shortest), None for the starting modules.
    """
    root, packages = root.resolve(), set(packages)
    found: dict[Path, Path | None] = {}
    queue: deque[Path] = deque()

    def add(module: str, importer: Path | None) -> None:
        parts = module.split(".")
        if parts[0] not in packages:
            return
        for i in range(1, len(parts) + 1):
            file = module_file(root, ".".join(parts[:i]))
            if file is not None and file not in found:
                found[file] = importer
                queue.append(file)

    for module in modules:
        add(module, None)
    while queue:
        file = queue.popleft()
        for module in referenced_modules(root, file):
            add(module, file)
    return found


def import_chain(closure: dict[Path, Path | None], file: Path, root: Path) -> str:
    """`start.py -> ... -> file.py`: how the closure reached `file`."""
    chain = [file]
    while (importer := closure[chain[-1]]) is not None:
        chain.append(importer)
    return " -> ".join(str(path.relative_to(root)) for path in reversed(chain))


# --- deps ----------------------------------------------------------------------------------------------


def dep_path(root: Path, dep: str) -> Path:
    """A dep as an absolute normalised path (relative deps are relative to the repository root)."""
    return Path(os.path.normpath(root / dep))


def is_covered(file: Path, deps: Iterable[str], root: Path) -> bool:
    """Whether some dep is the file itself or a folder above it."""
    return any(path == file or path in file.parents for path in (dep_path(root, dep) for dep in deps))


def superfluous_deps(
    deps: Iterable[str], closure: dict[Path, Path | None], root: Path, packages: Iterable[str]
) -> list[str]:
    """Code deps under `packages` the closure does not need: a `.py` file it does not contain, a folder
    of `.py` files none of which it contains, or a path that does not exist. Other files are left alone.
    """
    unneeded, packages = [], set(packages)
    for dep in deps:
        path = dep_path(root, dep)
        if not path.is_relative_to(root) or path.relative_to(root).parts[:1] not in {(p,) for p in packages}:
            continue
        if not path.exists():
            unneeded.append(f"{dep} (does not exist)")
        elif path.is_file() and path.suffix == ".py" and path not in closure:
            unneeded.append(f"{dep} (not imported)")
        elif path.is_dir() and any(path.rglob("*.py")) and not any(path in file.parents for file in closure):
            unneeded.append(f"{dep} (no imported module under it)")
    return unneeded


# --- the checks on this repository's dvc.yaml ----------------------------------------------------------


STAGES = expand_stages(
    yaml.safe_load((REPO / "dvc.yaml").read_text()), yaml.safe_load((REPO / "params.yaml").read_text())
)


@functools.cache
def stage_closure(cmd: str) -> dict[Path, Path | None]:
    """The import closure of the project modules a command runs (fails when it runs none)."""
    modules = [m for m in stage_modules(cmd) if m.split(".")[0] in PACKAGES]
    if not modules:
        if "python" not in cmd:
            pytest.skip("the command runs no Python")
        pytest.fail(f"no `python -m <{'|'.join(PACKAGES)}>.<module>` in {cmd!r}: cannot check its deps")
    return import_closure(REPO, modules, PACKAGES)


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_deps_cover_the_code_the_stage_runs(stage: Stage) -> None:
    closure = stage_closure(stage.cmd)
    missing = [file for file in closure if not is_covered(file, stage.deps, REPO)]
    lines = [
        f"  {file.relative_to(REPO)}  (imported via {import_chain(closure, file, REPO)})"
        if closure[file]
        else f"  {file.relative_to(REPO)}  (run by the command's `python -m`)"
        for file in missing
    ]
    assert not missing, f"stage {stage.name!r}: deps miss code it runs:\n" + "\n".join(lines)


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_every_code_dep_is_code_the_stage_runs(stage: Stage) -> None:
    unneeded = superfluous_deps(stage.deps, stage_closure(stage.cmd), REPO, PACKAGES)
    assert not unneeded, f"stage {stage.name!r}: superfluous deps:\n" + "\n".join(f"  {d}" for d in unneeded)


# --- the helpers on small fakes ------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    """Write {relative path: source} under root."""
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)


def test_closure_follows_imports_in_functions_and_job_strings(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a/__init__.py": "",
            "a/b.py": 'import os\n\ndef run():\n    import a.c\n    return fan_out("a.d:f", [])\n',
            "a/c.py": "",
            "a/d.py": "def f():\n    pass\n",
            "a/unused.py": "",
        },
    )
    closure = import_closure(tmp_path, ["a.b"], ["a"])
    root = tmp_path.resolve()
    assert set(closure) == {root / "a/__init__.py", root / "a/b.py", root / "a/c.py", root / "a/d.py"}
    assert import_chain(closure, root / "a/d.py", root) == "a/b.py -> a/d.py"


def test_closure_resolves_relative_imports_submodules_and_parent_packages(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a/__init__.py": "from a.sub import x\n",
            "a/c.py": "value = 1\n",
            "a/sub/__init__.py": "",
            "a/sub/x.py": "from . import y\nfrom ..c import value\nimport other.thing\n",
            "a/sub/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a.typed\n",
            "a/typed.py": "",
            "a/deep/inner/z.py": "",
            "a/deep/__init__.py": "",
            "a/deep/inner/__init__.py": "",
            "a/e.py": "import a.deep.inner.z\n",
            "other/__init__.py": "",
            "other/thing.py": "",
        },
    )
    root = tmp_path.resolve()
    closure = import_closure(tmp_path, ["a"], ["a"])
    names = {str(file.relative_to(root)) for file in closure}
    assert names == {"a/__init__.py", "a/c.py", "a/sub/__init__.py", "a/sub/x.py", "a/sub/y.py"}
    deep = {str(file.relative_to(root)) for file in import_closure(tmp_path, ["a.e"], ["a"])}
    assert {"a/deep/__init__.py", "a/deep/inner/__init__.py", "a/deep/inner/z.py"} <= deep


def test_deps_checks_on_a_fake_package(tmp_path: Path) -> None:
    files = {"a/__init__.py": "", "a/b.py": "import a.c\n", "a/c.py": "", "a/d.py": "", "a/e/f.py": ""}
    write(tmp_path, files)
    root = tmp_path.resolve()
    closure = import_closure(root, ["a.b"], ["a"])
    assert is_covered(root / "a/c.py", ["a"], root) and not is_covered(root / "a/c.py", ["a/b.py"], root)
    deps = ["a/b.py", "a/c.py", "a/d.py", "a/e", "a/gone.py", "data/x"]
    assert superfluous_deps(deps, closure, root, ["a"]) == [
        "a/d.py (not imported)",
        "a/e (no imported module under it)",
        "a/gone.py (does not exist)",
    ]


def test_foreach_stages_expand_with_params_and_items() -> None:
    params = {"data": {"root": "data/demo"}, "folds": {"runs": [0, 1]}}
    dvc = {
        "stages": {
            "fold": {
                "foreach": "${folds.runs}",
                "do": {
                    "cmd": "python -m stages.fold --k ${item} && python -m stages.x",
                    "deps": ["${data.root}"],
                },
            },
            "view": {"foreach": ["face"], "do": {"cmd": "python -m stages.v ${item} ${nope}", "deps": []}},
        }
    }
    stages = expand_stages(dvc, params)
    assert [stage.name for stage in stages] == ["fold@0", "fold@1", "view@face"]
    assert stages[1].cmd == "python -m stages.fold --k 1 && python -m stages.x"
    assert stages[1].deps == ("data/demo",)
    assert stages[2].cmd == "python -m stages.v face ${nope}"
    assert stage_modules(stages[1].cmd) == ["stages.fold", "stages.x"]
