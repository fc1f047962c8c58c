"""Retrain the emotion classifier on each data interval (README "Airflow DAGs").

ingest -> validate -> prepare -> check_new_data -> train -> evaluate -> register: one call into
``pipelines.flow`` per task (heavy imports inside the tasks; only the light settings module at
parse time). Transient failures (chat store, tracking store, network) are retried with
exponential backoff; permanent ones (a failed validation, a rejected gate, bad input) fail the
task at once with the reason. ``check_new_data`` skips train/evaluate/register when too few
newly labelled rows arrived since the champion. ``register`` publishes the challenger asset,
which triggers the promote DAG.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import (
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
)
from emoreg_dag_support import challenger_asset, note_run, permanent_failures_fail_fast

from pipelines.settings import get_settings

log = logging.getLogger(__name__)

SETTINGS = get_settings()
MODEL = SETTINGS.registered_model_name
CHALLENGER = challenger_asset()

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
}


@dag(
    dag_id="retrain_emotion_classifier",
    description="ingest, validate, prepare, train, evaluate and register a challenger",
    schedule=CronDataIntervalTimetable(SETTINGS.retrain_schedule, timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,  # one prepared dataset (data/prepared) at a time
    default_args=DEFAULT_ARGS,
    tags=["emoreg", "ml", "retrain"],
    params={
        "start": Param(
            None,
            type=["null", "string"],
            description="interval start, ISO date/time (manual runs; default: the run's interval)",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            description="interval end, exclusive, ISO date/time (given with start)",
        ),
        "max_train_rows": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="stratified cap on training rows (quick profile); part of the training key",
        ),
    },
    doc_md=__doc__,
)
def retrain_emotion_classifier() -> None:
    @task(multiple_outputs=False)
    def ingest() -> dict[str, Any]:
        from pipelines import flow

        context = get_current_context()
        with permanent_failures_fail_fast():
            return flow.ingest(
                context["params"],
                context.get("data_interval_start"),
                context.get("data_interval_end"),
            ).to_dict()

    @task(multiple_outputs=False)
    def validate(ingested: dict[str, Any]) -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            return flow.validate(ingested["interval"]).to_dict()

    @task(multiple_outputs=False)
    def prepare(validated: dict[str, Any]) -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            return flow.prepare(validated["interval"]).to_dict()

    @task.short_circuit
    def check_new_data(prepared: dict[str, Any]) -> bool:
        from pipelines import flow

        with permanent_failures_fail_fast():
            check = flow.check_new_data(prepared)
        if not check.proceed:
            log.warning("skipping train, evaluate and register: %s", check.reason)
            note_run(f"training skipped: {check.reason}")
        return check.proceed

    @task(multiple_outputs=False)
    def train(prepared: dict[str, Any]) -> dict[str, Any]:
        from pipelines import flow

        rows = get_current_context()["params"].get("max_train_rows")
        with permanent_failures_fail_fast():
            return flow.train(prepared, max_train_rows=rows).to_dict()

    @task(multiple_outputs=False)
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            return flow.evaluate(trained["run_id"]).to_dict()

    @task(multiple_outputs=False, outlets=[CHALLENGER])
    def register(evaluated: dict[str, Any]) -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            registered = flow.register(evaluated["run_id"]).to_dict()
        # The asset event carries the version (model_name, version, run_id, created, model_uri).
        get_current_context()["outlet_events"][CHALLENGER].extra = registered
        page = f"{SETTINGS.mlflow_ui_url}/#/models/{MODEL}/versions/{registered['version']}"
        done = "registered" if registered["created"] else "already registered as"
        note_run(f"{done} {MODEL} version {registered['version']}, approval pending: {page}")
        return registered

    prepared = prepare(validate(ingest()))
    trained = train(prepared)
    check_new_data(prepared) >> trained
    register(evaluate(trained))


retrain_emotion_classifier()
