"""A small client of Airflow 3's REST API v2 (a JWT from ``POST /auth/token``, simple auth)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from scripts.platform.config import PlatformError

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class TaskChange:
    task_id: str
    state: str
    duration_s: float | None
    try_number: int


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def _login(self) -> None:
        response = self._http.post("/auth/token", json=self._credentials)
        if response.status_code not in (200, 201):
            raise PlatformError(
                f"Airflow login as {self._credentials['username']} failed "
                f"({response.status_code}): {response.text[:200]}"
            )
        self._token = response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call with the JWT; logs in again once when the token expired."""
        for attempt in (1, 2):
            if self._token is None:
                self._login()
            headers = {"Authorization": f"Bearer {self._token}"}
            response = self._http.request(method, path, headers=headers, **kwargs)
            if response.status_code != 401 or attempt == 2:
                return response
            self._token = None
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise PlatformError(
                f"Airflow {method} {path}: {response.status_code} {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/api/v2/dags/{dag_id}")
        return response.json() if response.status_code == 200 else None

    def import_errors(self) -> list[str]:
        body = self._json("GET", "/api/v2/importErrors")
        return [f"{e['filename']}: {e['stack_trace']}" for e in body.get("import_errors", [])]

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180.0) -> None:
        """Until the dag-processor has parsed ``dag_id`` (GET /api/v2/dags/{id} answers 200)."""
        deadline = time.monotonic() + timeout_s
        while self.get_dag(dag_id) is None:
            if time.monotonic() > deadline:
                errors = "\n".join(self.import_errors()) or "(no import errors reported)"
                raise PlatformError(
                    f"DAG {dag_id} not parsed after {timeout_s:.0f} s; import errors:\n{errors}"
                )
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> None:
        self._json(
            "PATCH", f"/api/v2/dags/{dag_id}", params={"update_mask": "is_paused"},
            json={"is_paused": False},
        )  # fmt: skip

    def ensure_pool(self, name: str, slots: int, description: str) -> str:
        """Create the pool or set its slots; returns "created", "updated" or "exists"."""
        response = self.request("GET", f"/api/v2/pools/{name}")
        if response.status_code == 404:
            body = {"name": name, "slots": slots, "description": description}
            self._json("POST", "/api/v2/pools", json=body)
            return "created"
        if response.status_code != 200:
            raise PlatformError(f"Airflow GET pool {name}: {response.status_code}")
        if response.json().get("slots") == slots:
            return "exists"
        self._json("PATCH", f"/api/v2/pools/{name}", json={"name": name, "slots": slots})
        return "updated"

    def trigger(self, dag_id: str, conf: dict[str, Any], run_after: datetime | None = None) -> str:
        """A manual run (no logical date); ``run_after`` in the past puts it ahead of later runs."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_after is not None:
            now = datetime.now(UTC)
            body["run_after"] = min(run_after, now).isoformat()
            body["dag_run_id"] = f"manual__{now.isoformat()}"  # Airflow's would use run_after
        return str(self._json("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def active_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Queued and running runs of ``dag_id``."""
        params = {"state": ["queued", "running"], "limit": 20}
        body = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)
        return list(body.get("dag_runs", []))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        body = self._json("GET", path, params={"limit": 100})
        return list(body.get("task_instances", []))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (None when absent)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
        response = self.request("GET", f"{path}/xcomEntries/{key}")
        return response.json().get("value") if response.status_code == 200 else None

    def task_url(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"{self.base_url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/{task_id}"

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        on_change: Callable[[TaskChange], None],
        on_run_state: Callable[[str], None] = lambda _state: None,
        timeout_s: float = 4 * 3600,
        poll_s: float = 2.0,
    ) -> tuple[str, list[dict[str, Any]]]:
        """Poll until the run ends: ``on_change`` once per task state change, ``on_run_state``
        at every poll with the run's state.

        Returns the run's final state and its task instances.
        """
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            state = str(self.dag_run(dag_id, run_id)["state"])
            on_run_state(state)
            tis = self.task_instances(dag_id, run_id)
            for ti in tis:
                key, ti_state = _ti_key(ti), str(ti.get("state") or "none")
                if seen.get(key, "none") != ti_state:
                    on_change(_change(ti, ti_state))
                seen[key] = ti_state
            if state in TERMINAL_RUN_STATES:
                return state, tis
            if time.monotonic() > deadline:
                raise PlatformError(f"{dag_id} run {run_id} still {state} after {timeout_s:.0f} s")
            time.sleep(poll_s)


def _ti_key(ti: dict[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return str(ti["task_id"]) if index in (-1, None) else f"{ti['task_id']}[{index}]"


def _change(ti: dict[str, Any], state: str) -> TaskChange:
    duration = ti.get("duration")
    return TaskChange(
        task_id=_ti_key(ti),
        state=state,
        duration_s=float(duration) if duration is not None else None,
        try_number=int(ti.get("try_number") or 1),
    )


def task_log_file(airflow_home: Path, dag_id: str, run_id: str, ti: dict[str, Any]) -> Path:
    """Where the task's log lies under Airflow's default log layout."""
    folder = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    folder = folder / f"task_id={ti['task_id']}"
    if ti.get("map_index", -1) not in (-1, None):
        folder = folder / f"map_index={ti['map_index']}"
    return folder / f"attempt={int(ti.get('try_number') or 1)}.log"


def readable_log_tail(path: Path, lines: int = 15) -> str:
    """The end of a task log, its JSON lines shortened to time, level, event (and the error)."""
    out: list[str] = []
    for raw in path.read_text(errors="replace").splitlines()[-200:]:
        try:
            entry = json.loads(raw)
        except ValueError:
            out.append(raw)
            continue
        if not isinstance(entry, dict):
            out.append(raw)
            continue
        stamp, level = str(entry.get("timestamp", ""))[11:19], entry.get("level", "")
        out.append(f"{stamp} {level:<7} {entry.get('event', '')}")
        for error in entry.get("error_detail") or []:
            frame = (error.get("frames") or [{}])[-1]
            where = f"{frame.get('filename')}:{frame.get('lineno')}" if frame else ""
            out.append(f"    {error.get('exc_type')}: {error.get('exc_value')}  ({where})")
    return "\n".join("    " + line for line in out[-lines:])
