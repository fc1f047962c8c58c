"""Notes on Airflow DAG runs: why a run failed or skipped training, shown on the run's page.

A task cannot write its run's note through the Task Execution API (Airflow 3.3 has no such call),
so it uses the public REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}``) as the
platform's own account: user ``settings.airflow_user``, password from the simple auth manager's
password file (``settings.airflow_password_file``, written by the platform's start script or by
Compose's ``airflow-init``). A note is a courtesy: when it cannot be written (no login file, the
api-server unreachable) the task goes on and says so in its log, where the reason is anyway.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

from pipelines.settings import Settings

log = logging.getLogger(__name__)

NOTE_MAX_CHARS = 1000  # the size of Airflow's dag_run_note.content column
TIMEOUT_S = 10.0


class RunNoteError(RuntimeError):
    """The note could not be written; the message says why."""


def _password(settings: Settings) -> str:
    path = settings.airflow_password_file
    try:
        passwords = json.loads(path.read_text(encoding="utf-8"))
        return str(passwords[settings.airflow_user])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunNoteError(f"no password of {settings.airflow_user!r} in {path}: {exc}") from exc


def put_run_note(settings: Settings, dag_id: str, run_id: str, note: str) -> None:
    """Replace the run's note (truncated to what Airflow keeps); raises :class:`RunNoteError`."""
    import httpx

    if len(note) > NOTE_MAX_CHARS:
        note = note[: NOTE_MAX_CHARS - 1] + "…"
    credentials = {"username": settings.airflow_user, "password": _password(settings)}
    path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
    try:
        with httpx.Client(base_url=settings.airflow_url, timeout=TIMEOUT_S) as http:
            login = http.post("/auth/token", json=credentials)
            if login.status_code not in (200, 201):
                raise RunNoteError(f"Airflow login failed ({login.status_code})")
            token = login.json()["access_token"]
            response = http.patch(
                path,
                params={"update_mask": "note"},
                json={"note": note},
                headers={"Authorization": f"Bearer {token}"},
            )
    except httpx.HTTPError as exc:
        raise RunNoteError(f"Airflow at {settings.airflow_url} unreachable: {exc}") from exc
    if response.status_code != 200:
        raise RunNoteError(f"PATCH {path}: {response.status_code} {response.text[:200]}")


def write_run_note(settings: Settings, dag_id: str, run_id: str, note: str) -> bool:
    """:func:`put_run_note`, logging instead of raising; True when the note was written."""
    try:
        put_run_note(settings, dag_id, run_id, note)
    except RunNoteError as exc:
        log.warning("the run's note was not written (%s); the reason stays in this log", exc)
        return False
    log.info("run note of %s/%s: %s", dag_id, run_id, note)
    return True
