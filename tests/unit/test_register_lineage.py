"""Lineage values the register step writes as version tags."""

from __future__ import annotations


def test_git_commit_marks_uncommitted_changes(tmp_path):
    import subprocess

    from pipelines.registry.register import git_commit

    assert git_commit(tmp_path) == "unknown"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    head = git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
