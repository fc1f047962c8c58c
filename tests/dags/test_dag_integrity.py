"""Every DAG file parses quickly, without work at parse time, into the expected task graph."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.dags.dagrun import DAGS_FOLDER

ROOT = DAGS_FOLDER.parent
DAG_FILES = sorted(DAGS_FOLDER.glob("*.py"))
MAX_PARSE_S = 2.0

RETRAIN = "retrain_emotion_classifier"
PROMOTE = "promote_emotion_classifier"
ROLLBACK = "rollback_emotion_classifier"
PROMOTION_POOL = "model_promotion"  # created by the platform start script
CHALLENGER_URI = "emoreg://models/emotion-classifier/challenger"

# dag id -> {task id: its downstream task ids}
EXPECTED_GRAPHS: dict[str, dict[str, set[str]]] = {
    RETRAIN: {
        "ingest": {"validate"},
        "validate": {"prepare"},
        "prepare": {"check_new_data", "train"},
        "check_new_data": {"train"},
        "train": {"evaluate"},
        "evaluate": {"register"},
        "register": set(),
    },
    PROMOTE: {"check_serving": {"promote"}, "promote": set()},
    ROLLBACK: {"rollback": set()},
}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_file_imports_without_errors_and_quickly(dagbag: Any) -> None:
    assert DAG_FILES, f"no DAG files in {DAGS_FOLDER}"
    assert dagbag.import_errors == {}
    stats = {Path(stat.file).name: stat for stat in dagbag.dagbag_stats}
    assert set(stats) == {path.name for path in DAG_FILES}
    for name, stat in stats.items():
        assert stat.dag_num == 1, f"{name} defines {stat.dag_num} DAGs"
        assert stat.duration < timedelta(seconds=MAX_PARSE_S), f"{name} took {stat.duration}"
    assert set(dagbag.dag_ids) == set(EXPECTED_GRAPHS)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_GRAPHS))
def test_task_graph(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    graph = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}
    assert graph == EXPECTED_GRAPHS[dag_id]
    upstream = {task.task_id: set(task.upstream_task_ids) for task in dag.tasks}
    for task_id, downstream in EXPECTED_GRAPHS[dag_id].items():
        for child in downstream:
            assert task_id in upstream[child]


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_GRAPHS))
def test_tags_owner_retries_and_no_catchup(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "emoreg" in dag.tags
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff == 2.0, task.task_id
        assert task.max_retry_delay is not None, task.task_id


def test_retrain_schedule_params_and_short_circuit(dagbag: Any) -> None:
    dag = dagbag.dags[RETRAIN]
    timetable = dag.timetable
    # Data intervals from the cron (a trigger timetable would give empty intervals).
    assert type(timetable).__name__ == "CronDataIntervalTimetable"
    assert timetable.expression == "0 0 * * *"  # "@daily", the settings' default
    assert dict(dag.params) == {"start": None, "end": None, "max_train_rows": None}
    assert type(dag.get_task("check_new_data")).__name__ == "_ShortCircuitDecoratedOperator"
    outlets = dag.get_task("register").outlets
    assert [asset.uri for asset in outlets] == [CHALLENGER_URI]


def test_promote_runs_on_the_clock_or_on_the_challenger_asset(dagbag: Any) -> None:
    dag = dagbag.dags[PROMOTE]
    retrain = dagbag.dags[RETRAIN]
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert type(timetable.timetable).__name__ == "CronTriggerTimetable"
    assert timetable.timetable.expression == "*/5 * * * *"
    assert timetable.asset_condition == retrain.get_task("register").outlets[0]
    assert {task.pool for task in dag.tasks} == {PROMOTION_POOL}


def test_rollback_is_manual_needs_a_reason_and_shares_the_pool(dagbag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags[ROLLBACK]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: manual only
    assert {task.pool for task in dag.tasks} == {PROMOTION_POOL}
    with pytest.raises(ParamValidationError):
        dag.params.validate()  # no reason given
    params = copy.deepcopy(dag.params)
    params["reason"] = "v7 answers everything negative"
    assert params.validate() == {"reason": "v7 answers everything negative"}


def test_parsing_does_no_work_and_imports_nothing_heavy() -> None:
    """A fresh interpreter parses the folder; only pipelines.settings may come from pipelines."""
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
print(json.dumps({{"errors": list(bag.import_errors), "new": sorted(set(sys.modules) - before)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == []
    new = set(loaded["new"])
    assert {m for m in new if m.startswith("pipelines")} == {"pipelines", "pipelines.settings"}
    heavy = ("pandas", "mlflow", "torch", "transformers", "great_expectations", "sklearn")
    assert not {m for m in new if m.split(".")[0] in heavy}


def test_ruff_airflow_rules_pass_on_dags() -> None:
    done = subprocess.run(
        [Path(sys.executable).with_name("ruff"), "check", "--select", "AIR", "--preview",
         str(DAGS_FOLDER)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
