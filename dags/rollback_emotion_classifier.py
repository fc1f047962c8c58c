"""Roll the champion back to the previous version (manual; README "Airflow DAGs").

Trigger it with a ``reason`` (who asked and why). It restarts the ``previous`` version's model
server, switches traffic to it and moves the aliases back; it runs in the one-slot pool
``model_promotion`` so it never overlaps a promotion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

POOL = "model_promotion"  # shared with the promote DAG

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
    dag_id="rollback_emotion_classifier",
    description="put the previous champion back in service",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
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
        with _permanent_failures_fail_fast():
            return flow.rollback(reason).to_dict()

    rollback()


rollback_emotion_classifier()
