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
from datetime import datetime
from typing import Any

from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    dag,
    task,
)
from emoreg_dag_support import (
    PROMOTION_DEFAULT_ARGS,
    challenger_asset,
    note_run,
    permanent_failures_fail_fast,
)

from pipelines.settings import get_settings

log = logging.getLogger(__name__)

SETTINGS = get_settings()
CHALLENGER = challenger_asset()


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
    default_args=PROMOTION_DEFAULT_ARGS,
    tags=["emoreg", "ml", "promotion"],
    doc_md=__doc__,
)
def promote_emotion_classifier() -> None:
    @task(multiple_outputs=False)
    def check_serving() -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            return flow.check_serving().to_dict()

    @task(multiple_outputs=False)
    def promote() -> dict[str, Any]:
        from pipelines import flow

        with permanent_failures_fail_fast():
            outcome = flow.promote()
        if outcome.action == "refused":
            log.warning("approval of version %s refused: %s", outcome.version, outcome.reason)
            note_run(f"approval of version {outcome.version} refused: {outcome.reason}")
        elif outcome.action == "promoted":
            note_run(f"version {outcome.version} promoted, serving at {outcome.url}")
        elif outcome.action == "none":
            log.info("nothing to promote: %s", outcome.reason or "no approved challenger waits")
        return outcome.to_dict()

    check_serving() >> promote()


promote_emotion_classifier()
