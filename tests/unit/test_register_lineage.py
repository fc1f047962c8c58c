"""Lineage values the training run is tagged with when it starts (register copies them)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from pipelines.settings import Settings
from pipelines.tracking import file_sha256, git_commit, lineage_tags

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "step.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / ".gitignore").write_text("/var/\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "x")
    return tmp_path


def test_outside_a_checkout_or_before_the_first_commit_it_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
    git(tmp_path, "init", "-q")
    assert git_commit(tmp_path) == "unknown"


def test_a_clean_checkout_gives_head(repo: Path) -> None:
    assert git_commit(repo) == git(repo, "rev-parse", "HEAD")
    # runtime state, git-ignored, and files that do not make the model leave it clean
    (repo / "var").mkdir()
    (repo / "var" / "mlflow.db").write_text("state")
    (repo / "README.md").write_text("changed\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    assert git_commit(repo) == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    "change",
    ["modified code", "modified params", "staged", "deleted", "new module", "new in subfolder"],
)
def test_uncommitted_code_or_params_mark_it_dirty(repo: Path, change: str) -> None:
    head = git(repo, "rev-parse", "HEAD")
    if change == "modified code":
        (repo / "pipelines" / "step.py").write_text("x = 2\n")
    elif change == "modified params":
        (repo / "params.yaml").write_text("a: 2\n")
    elif change == "staged":
        (repo / "params.yaml").write_text("a: 2\n")
        git(repo, "add", "params.yaml")
    elif change == "deleted":
        (repo / "pipelines" / "step.py").unlink()
    elif change == "new module":  # untracked, not ignored: it runs all the same
        (repo / "pipelines" / "textprep.py").write_text("y = 1\n")
    else:
        (repo / "pipelines" / "data").mkdir()
        (repo / "pipelines" / "data" / "new.py").write_text("y = 1\n")
    assert git_commit(repo) == f"{head}-dirty"
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "y")
    assert git_commit(repo) == git(repo, "rev-parse", "HEAD") != head


def test_lineage_tags_read_the_params_file_bytes_and_git(repo: Path) -> None:
    settings = Settings(project_root=repo, params_path=repo / "params.yaml")
    tags = lineage_tags(settings, dataset_hash="d" * 64, data_interval="[a, b)")
    assert tags == {
        "dataset_hash": "d" * 64,
        "data_interval": "[a, b)",
        "git_commit": git(repo, "rev-parse", "HEAD"),
        "params_hash": hashlib.sha256(b"a: 1\n").hexdigest(),
    }
    (repo / "params.yaml").write_text("a: 2\n")
    changed = lineage_tags(settings, dataset_hash="d" * 64, data_interval=None)
    assert changed["params_hash"] == hashlib.sha256(b"a: 2\n").hexdigest()
    assert changed["git_commit"].endswith("-dirty")
    assert changed["data_interval"] == "unknown"
    assert file_sha256(repo / "missing.yaml") == "unknown"


def test_register_copies_the_runs_lineage_and_computes_none() -> None:
    from types import SimpleNamespace

    from pipelines.registry import register

    run = SimpleNamespace(
        data=SimpleNamespace(
            tags={
                "dataset_hash": "h",
                "data_interval": "[a, b)",
                "git_commit": "abc-dirty",
                "params_hash": "p",
                "compared_to": "3",
            },
            params={},
        )
    )
    tags = register._lineage_tags(run, None, "r1")  # type: ignore[arg-type]
    assert {k: tags[k] for k in ("dataset_hash", "data_interval", "git_commit", "params_hash")} == {
        "dataset_hash": "h",
        "data_interval": "[a, b)",
        "git_commit": "abc-dirty",
        "params_hash": "p",
    }
    bare = SimpleNamespace(data=SimpleNamespace(tags={}, params={}))
    tags = register._lineage_tags(bare, {"dataset_hash": "e"}, "r2")  # type: ignore[arg-type]
    assert (tags["git_commit"], tags["params_hash"], tags["dataset_hash"]) == (
        "unknown",
        "unknown",
        "e",
    )
