"""What the three DAG files share: the challenger asset and how a task ends on a failure.

Not a DAG file (``dags/.airflowignore`` lists it); Airflow puts the dags folder on ``sys.path``,
so the DAG files import it by name. Like them it imports only ``airflow.sdk`` and the light
settings module at parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, get_current_context
from airflow.sdk.exceptions import AirflowFailException

from pipelines.settings import get_settings

log = logging.getLogger(__name__)

PROMOTION_POOL = get_settings().promotion_pool  # one slot, created by the platform start script

# Promotion and rollback: a held lock is worth a few quick retries; every task in the one pool.
PROMOTION_DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "pool": PROMOTION_POOL,
}


def challenger_asset() -> Asset:
    """Published by the retrain DAG's ``register`` with the new version; schedules promotion."""
    model = get_settings().registered_model_name
    return Asset(
        name=f"{model}-challenger", uri=f"emoreg://models/{model}/challenger", group="models"
    )


def note_run(note: str) -> None:
    """Put ``note`` on the running task's DAG run (shown in the UI); best effort."""
    from pipelines.run_notes import write_run_note

    ti = get_current_context()["ti"]
    write_run_note(get_settings(), ti.dag_id, ti.run_id, note)


@contextmanager
def permanent_failures_fail_fast() -> Iterator[None]:
    """A permanent flow error fails the task at once (no retry), its reason logged, kept as the
    XCom ``failure_reason`` and written as the run's note; transient ones go to the retries."""
    from pipelines.flow import PermanentError

    try:
        yield
    except PermanentError as exc:
        log.error("%s: %s", type(exc).__name__, exc.reason)
        ti = get_current_context()["ti"]
        ti.xcom_push(key="failure_reason", value=exc.reason)
        note_run(f"{ti.task_id} failed: {exc.reason}")
        raise AirflowFailException(exc.reason) from exc
