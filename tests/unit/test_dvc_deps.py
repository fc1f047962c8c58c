"""Every DVC stage lists the code it runs, so a code change re-runs the stages it affects.

For each stage of ``dvc.yaml`` whose command is ``python -m pipelines STEP``, the module that
implements STEP (``pipelines.cli.STEPS``) and everything it imports from ``pipelines``,
transitively, must be covered by the stage's ``deps`` (the file itself or a folder above it).
Imports are read with ``ast``: module level and inside functions, absolute and relative; the ones
under ``if TYPE_CHECKING:`` never run and do not count, nor do package ``__init__.py`` files that
hold only a docstring. ``python -m pipelines`` itself (``__main__``, ``cli``) only dispatches to
the step module and is not required.

Nothing here is a hard-coded list: a new import shows up as a missing dependency by itself.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pipelines"


def load_yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def interpolate(text: str, params: dict[str, Any]) -> str:
    """``${ingest.start}`` -> the value in params.yaml (what DVC does)."""

    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match[1].split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{\s*([\w.]+)\s*\}", value, text)


def dep_paths(entries: list[Any], params: dict[str, Any]) -> list[str]:
    paths = [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]
    return [interpolate(p, params).rstrip("/") for p in paths]


def module_file(module: str) -> Path | None:
    """The file of a ``pipelines`` module, or None when it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1])  # a module's package; __init__'s package is its folder


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the ``pipelines`` modules that ``path`` imports when it runs."""
    return modules_imported_by(path.read_text(encoding="utf-8"), _package_of(path))


def modules_imported_by(source: str, package: str) -> set[str]:
    """The ``pipelines`` modules imported by ``source``, a module of ``package``."""
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base_parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        found.add(base)
        # `from pipelines.data import text` imports the submodule pipelines.data.text
        found.update(f"{base}.{alias.name}" for alias in node.names)
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return {m for m in with_parents if module_file(m) is not None}


def _only_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


@cache
def import_closure(module: str) -> frozenset[Path]:
    """Files of ``module`` and of every ``pipelines`` module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path is not None, f"{name} is not a module under {PACKAGE}/"
        todo.extend(imported_modules(path) - seen)
    files = {module_file(name) for name in seen}
    return frozenset(
        f for f in files if f is not None and not (f.name == "__init__.py" and _only_docstring(f))
    )


def step_module(cmd: str) -> str | None:
    """The module implementing ``python -m pipelines STEP ...``, or None for another command."""
    from pipelines.cli import STEPS

    words = shlex.split(cmd)
    if words[:3] != ["python", "-m", PACKAGE] or len(words) < 4:
        return None
    step = words[3]
    assert step in STEPS, f"`{cmd}`: no step {step!r} in pipelines/cli.py"
    return STEPS[step][0].partition(":")[0]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep + "/") for dep in deps)


def pipeline_stages() -> list[tuple[str, str, list[str]]]:
    """(stage, step module, deps) of every ``python -m pipelines`` stage of dvc.yaml."""
    params = load_yaml("params.yaml")
    stages = []
    for name, stage in load_yaml("dvc.yaml")["stages"].items():
        module = step_module(interpolate(stage["cmd"], params))
        if module is not None:
            stages.append((name, module, dep_paths(stage.get("deps"), params)))
    return stages


STAGES = pipeline_stages()


def test_every_stage_runs_a_pipelines_step() -> None:
    all_stages = load_yaml("dvc.yaml")["stages"]
    assert len(STAGES) == len(all_stages) > 0


@pytest.mark.parametrize(("stage", "module", "deps"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_deps_cover_the_code_it_imports(stage: str, module: str, deps: list[str]) -> None:
    missing = sorted(
        f.relative_to(ROOT).as_posix() for f in import_closure(module) if not covered(f, deps)
    )
    assert not missing, f"dvc.yaml stage {stage!r} ({module}) lacks deps: {missing}"


@pytest.mark.parametrize(("stage", "module", "deps"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_deps_exist(stage: str, module: str, deps: list[str]) -> None:
    # Outputs of other stages and runtime state (data/, var/) appear as the pipeline runs.
    params = load_yaml("params.yaml")
    outs = {
        path
        for other in load_yaml("dvc.yaml")["stages"].values()
        for key in ("outs", "metrics", "plots")
        for path in dep_paths(other.get(key), params)
    }
    absent = [
        dep
        for dep in deps
        if dep not in outs and not dep.startswith(("data/", "var/")) and not (ROOT / dep).exists()
    ]
    assert not absent, f"dvc.yaml stage {stage!r} names deps that do not exist: {absent}"


def test_the_walk_follows_function_level_relative_and_package_imports() -> None:
    # The walker itself: a change in it must not hide missing deps silently.
    closure = {f.relative_to(ROOT).as_posix() for f in import_closure("pipelines.model.train")}
    # module level (train_data), function level (tracking, inside train()), via train_data
    # -> prepare (function level) -> its module-level imports
    assert {
        "pipelines/model/train.py",
        "pipelines/model/train_data.py",
        "pipelines/tracking.py",
        "pipelines/data/prepare.py",
        "pipelines/params.py",
        "pipelines/settings.py",
    } <= closure
    assert "pipelines/cli.py" not in closure

    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import text\n"
        "from .. import partitions\n"
        "from ..model import vocab\n"
        "import pipelines.store.db\n"
        "if TYPE_CHECKING:\n"
        "    from pipelines import flow\n"
        "else:\n"
        "    from pipelines import run_notes\n"
        "def f():\n"
        "    from pipelines.registry.register import register\n"
    )
    found = modules_imported_by(source, "pipelines.data")  # as if it were pipelines/data/m.py
    assert {
        "pipelines.data.text",
        "pipelines.partitions",
        "pipelines.model.vocab",
        "pipelines.store",
        "pipelines.store.db",
        "pipelines.run_notes",
        "pipelines.registry.register",
    } <= found
    assert "pipelines.flow" not in found
