"""The retrain DAG end to end with ``dag.test()`` on the tiny platform (tasks run in-process).

One module-scoped scenario runs the DAG five times against one store and one MLflow registry:

1. the good day: every task succeeds and a challenger is registered;
2. the same day again: the waiting challenger saw every row, so training is skipped, and no
   version and no partition is added; with the challenger alias removed (no baseline left) the
   same day trains again, reuses the finished run by its training key and registers nothing;
3. a broken day: validate fails at once (no retry), nothing downstream runs or registers;
4. the good day once more after version 1 became champion: nothing new arrived, so
   check_new_data short-circuits train, evaluate and register (skipped, not failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.dags.dagrun import RunRecord, run_dag
from tests.dags.tiny_platform import (
    BAD_DAY,
    BAD_DAY_MESSAGES,
    GOOD_DAY,
    UNSET_ENV,
    TinyPlatform,
    build_tiny_platform,
)

DAG_ID = "retrain_emotion_classifier"
MODEL = "emotion-classifier"
TASKS = ("ingest", "validate", "prepare", "check_new_data", "train", "evaluate", "register")


@dataclass(frozen=True)
class Retrain:
    """A retrain DAG run and the registry right after it."""

    run: RunRecord
    versions: list[str]  # registered versions
    training_runs: int  # runs in the experiment


@dataclass(frozen=True)
class Scenario:
    platform: TinyPlatform
    first: Retrain
    rerun: Retrain
    unaliased: Retrain
    broken: Retrain
    nothing_new: Retrain


def _client() -> Any:
    from pipelines.settings import get_settings
    from pipelines.tracking import client

    return client(get_settings())


def _versions() -> list[str]:
    versions = _client().search_model_versions(f"name = '{MODEL}'")
    return sorted((str(v.version) for v in versions), key=int)


def _training_runs() -> int:
    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow

    experiment_id = configure_mlflow(get_settings())
    return len(_client().search_runs([experiment_id], max_results=1000))


def _retrain(conf: dict[str, Any]) -> Retrain:
    return Retrain(run_dag(DAG_ID, conf), _versions(), _training_runs())


@pytest.fixture(scope="module")
def scenario(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    import mlflow

    from pipelines.settings import get_settings

    platform = build_tiny_platform(tmp_path_factory.mktemp("platform"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in platform.env.items():
            mp.setenv(name, value)
        for name in UNSET_ENV:
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        try:
            first = _retrain(GOOD_DAY)
            rerun = _retrain(GOOD_DAY)
            _client().delete_registered_model_alias(MODEL, "challenger")
            unaliased = _retrain(GOOD_DAY)
            _client().set_registered_model_alias(MODEL, "challenger", first.versions[-1])
            broken = _retrain(BAD_DAY)
            # What the promote DAG does once the ML lead approves: version 1 becomes champion.
            _client().set_registered_model_alias(MODEL, "champion", first.versions[-1])
            nothing_new = _retrain(GOOD_DAY)
            yield Scenario(platform, first, rerun, unaliased, broken, nothing_new)
        finally:
            mlflow.set_tracking_uri(None)
            get_settings.cache_clear()


def test_first_run_registers_a_pending_challenger(scenario: Scenario) -> None:
    run = scenario.first.run
    assert run.state == "success", run.tasks
    assert {task: state for task, (state, _) in run.tasks.items()} == dict.fromkeys(
        TASKS, "success"
    )
    assert scenario.first.versions == ["1"]
    registered = run.xcoms["register"]
    assert registered["version"] == "1" and registered["created"] is True
    assert registered["run_id"] == run.xcoms["train"]["run_id"]
    assert run.xcoms["train"]["reused"] is False
    assert run.failure_reasons == {}

    version = _client().get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == "1"
    assert version.run_id == registered["run_id"]
    assert version.tags["gate"] == "blessed"
    assert version.tags["approval"] == "pending"
    assert version.tags["data_interval"].endswith("2026-11-02T00:00:00+00:00)")

    # The asset event that schedules the promote DAG carries the new version.
    assert run.asset_events == [
        {"uri": "emoreg://models/emotion-classifier/challenger", "extra": registered}
    ]


def test_xcom_carries_only_small_references(scenario: Scenario) -> None:
    run = scenario.first.run
    assert run.xcoms["ingest"]["interval"] == {
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-02T00:00:00+00:00",
        "key": "interval=2026-11-01_2026-11-02",
    }
    assert run.xcoms["check_new_data"] is True
    for task_id, value in run.xcoms.items():
        assert len(repr(value)) < 2000, task_id


def test_rerun_of_the_same_interval_adds_no_version_run_or_partition(
    scenario: Scenario,
) -> None:
    first, rerun = scenario.first.run, scenario.rerun.run
    assert rerun.state == "success", rerun.tasks
    for task in ("train", "evaluate", "register"):
        assert rerun.state_of(task) == "skipped", task
    assert "are new since challenger version 1" in rerun.log
    assert scenario.rerun.versions == scenario.first.versions == ["1"]
    assert scenario.rerun.training_runs == scenario.first.training_runs == 1

    good = [p.name for p in scenario.platform.partitions.iterdir() if "2026-11-01" in p.name]
    assert good == ["interval=2026-11-01_2026-11-02"]
    raw = pd.read_parquet(scenario.platform.partitions / good[0] / "raw.parquet")
    assert raw["message_id"].is_unique
    assert len(raw) == rerun.xcoms["ingest"]["rows"] == first.xcoms["ingest"]["rows"]


def test_without_a_baseline_a_rerun_reuses_its_training_run(scenario: Scenario) -> None:
    first, again = scenario.first.run, scenario.unaliased.run
    assert again.state == "success", again.tasks
    assert "no champion or challenger of emotion-classifier yet" in again.log
    assert again.xcoms["train"]["reused"] is True
    assert again.xcoms["train"]["run_id"] == first.xcoms["train"]["run_id"]
    assert again.xcoms["train"]["training_key"] == first.xcoms["train"]["training_key"]
    assert again.xcoms["register"] == {**first.xcoms["register"], "created": False}
    assert scenario.unaliased.versions == ["1"]
    assert scenario.unaliased.training_runs == 1


def test_failed_validation_fails_at_validate_without_retry(scenario: Scenario) -> None:
    run = scenario.broken.run
    assert run.state == "failed"
    assert run.tasks["ingest"] == ("success", 1)
    assert run.tasks["validate"] == ("failed", 1)  # not up_for_retry: no second try
    reason = run.failure_reasons["validate"]
    assert reason.startswith(
        "validation failed: partition interval=2026-11-05_2026-11-06 failed suite 'messages' "
        "(1 expectation(s): expect_column_proportion_of_unique_values_to_be_between(text)"
    )
    assert f"{BAD_DAY_MESSAGES} rows quarantined" in reason
    assert reason.splitlines()[0] in run.log
    for task in ("prepare", "check_new_data", "train", "evaluate", "register"):
        assert run.state_of(task) == "upstream_failed", task
    assert scenario.broken.versions == ["1"]
    assert scenario.broken.training_runs == 1
    assert run.asset_events == []

    partition = scenario.platform.partitions / "interval=2026-11-05_2026-11-06"
    assert not (partition / "validated.parquet").exists()
    quarantined = pd.read_parquet(partition / "quarantine.parquet")
    assert len(quarantined) == BAD_DAY_MESSAGES
    assert quarantined["quarantine_reason"].str.contains("proportion_of_unique").all()


def test_nothing_new_since_the_champion_skips_training(scenario: Scenario) -> None:
    run = scenario.nothing_new.run
    assert run.state == "success", run.tasks
    for task in ("ingest", "validate", "prepare", "check_new_data"):
        assert run.state_of(task) == "success", task
    for task in ("train", "evaluate", "register"):
        assert run.state_of(task) == "skipped", task
    assert not run.xcoms.get("check_new_data", False)  # a False condition (not pushed)
    assert "skipping train, evaluate and register: nothing new enough: 0 of " in run.log
    assert "are new since champion version 1" in run.log
    assert scenario.nothing_new.versions == ["1"]
    assert scenario.nothing_new.training_runs == 1
    assert run.asset_events == []
