"""Roll the champion back to the previous version (manual; README "Airflow DAGs").

Trigger it with a ``reason`` (who asked and why). It restarts the ``previous`` version's model
server, switches traffic to it and moves the aliases back; it runs in the one-slot pool
``model_promotion`` so it never overlaps a promotion.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from emoreg_dag_support import PROMOTION_DEFAULT_ARGS, note_run, permanent_failures_fail_fast

log = logging.getLogger(__name__)


@dag(
    dag_id="rollback_emotion_classifier",
    description="put the previous champion back in service",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=PROMOTION_DEFAULT_ARGS,
    tags=["emoreg", "ml", "promotion"],
    params={
        "reason": Param(
            type="string",
            minLength=3,
            description="why roll back (kept with the rollback in the registry)",
        ),
    },
    doc_md=__doc__,
)
def rollback_emotion_classifier() -> None:
    @task(multiple_outputs=False)
    def rollback() -> dict[str, Any]:
        from pipelines import flow

        reason = str(get_current_context()["params"]["reason"])
        with permanent_failures_fail_fast():
            outcome = flow.rollback(reason)
        note_run(f"rolled back to version {outcome.version} ({reason}), serving at {outcome.url}")
        return outcome.to_dict()

    rollback()


rollback_emotion_classifier()
