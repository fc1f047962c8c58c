"""Promote an approved challenger to champion (README "Airflow DAGs").

Runs every ``settings.promote_schedule`` (default every five minutes) and whenever the retrain
DAG registers a challenger (its asset event). ``check_serving`` makes sure the champion's model
server answers, then ``promote`` promotes a challenger the ML lead approved in MLflow. No approval
waiting: nothing happens (green). A refused approval is a valid outcome (green, reason logged and
tagged on the version). A failed attempt (the old champion keeps serving) fails the task. Both
tasks run in the one-slot pool ``model_promotion``, shared with the rollback DAG, so two
promotions never run at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from pipelines.settings import get_settings

log = logging.getLogger(__name__)

SETTINGS = get_settings()
MODEL = SETTINGS.registered_model_name
# The same asset the retrain DAG's register task publishes (name and URI must match).
CHALLENGER = Asset(
    name=f"{MODEL}-challenger", uri=f"emoreg://models/{MODEL}/challenger", group="models"
)
POOL = "model_promotion"  # one slot: created by the platform start script

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "pool": POOL,
}


@contextmanager
def _permanent_failures_fail_fast() -> Iterator[None]:
    """A permanent flow error fails the task at once (no retry), its reason logged and kept as
    the XCom ``failure_reason``; transient ones propagate to the retries."""
    from pipelines.flow import PermanentError

    try:
        yield
    except PermanentError as exc:
        log.error("%s: %s", type(exc).__name__, exc.reason)
        get_current_context()["ti"].xcom_push(key="failure_reason", value=exc.reason)
        raise AirflowFailException(exc.reason) from exc


@dag(
    dag_id="promote_emotion_classifier",
    description="promote an approved challenger to champion (blue/green model servers)",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SETTINGS.promote_schedule, timezone="UTC"),
        assets=CHALLENGER,
    ),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["emoreg", "ml", "promotion"],
    doc_md=__doc__,
)
def promote_emotion_classifier() -> None:
    @task(multiple_outputs=False)
    def check_serving() -> dict[str, Any]:
        from pipelines import flow

        with _permanent_failures_fail_fast():
            return flow.check_serving().to_dict()

    @task(multiple_outputs=False)
    def promote() -> dict[str, Any]:
        from pipelines import flow

        with _permanent_failures_fail_fast():
            outcome = flow.promote()
        if outcome.action == "refused":
            log.warning("approval of version %s refused: %s", outcome.version, outcome.reason)
        elif outcome.action == "none":
            log.info("nothing to promote: %s", outcome.reason or "no approved challenger waits")
        return outcome.to_dict()

    check_serving() >> promote()


promote_emotion_classifier()
