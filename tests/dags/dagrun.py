"""Run a DAG of ``dags/`` with ``dag.test()`` and read back what it left in the metadata DB."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@dataclass(frozen=True)
class RunRecord:
    """One dag.test() run: states, XComs, asset events and the log lines it produced."""

    run_id: str
    state: str
    tasks: dict[str, tuple[str, int]]  # task id -> (state, try_number)
    xcoms: dict[str, Any]  # task id -> return value
    failure_reasons: dict[str, str]  # task id -> XCom "failure_reason"
    asset_events: list[dict[str, Any]]  # {"uri", "extra"} of the events the run published
    log: str  # every log message of the run, one per line
    seconds: float

    def state_of(self, task_id: str) -> str:
        return self.tasks[task_id][0]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def run_dag(dag_id: str, conf: dict[str, Any] | None = None) -> RunRecord:
    """Parse ``dags/`` afresh (the settings may have changed) and run ``dag_id`` once."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(DAGS_FOLDER)).dags[dag_id]
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    started = time.perf_counter()
    try:
        dag_run = dag.test(run_conf=conf)
    finally:
        root.removeHandler(records)
    seconds = time.perf_counter() - started
    with create_session() as session:
        tasks = {
            ti.task_id: (str(ti.state), int(ti.try_number))
            for ti in dag_run.get_task_instances(session=session)
        }
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        values = {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}
        events = [
            {"uri": event.asset.uri, "extra": dict(event.extra or {})}
            for event in session.scalars(
                select(AssetEvent).where(AssetEvent.source_run_id == dag_run.run_id)
            )
        ]
        state = str(dag_run.state)
    return RunRecord(
        run_id=dag_run.run_id,
        state=state,
        tasks=tasks,
        xcoms={task: value for (task, key), value in values.items() if key == "return_value"},
        failure_reasons={
            task: value for (task, key), value in values.items() if key == "failure_reason"
        },
        asset_events=events,
        log="\n".join(records.messages),
        seconds=seconds,
    )
