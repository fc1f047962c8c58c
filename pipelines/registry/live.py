"""The live routing file: which model server answers for the champion right now.

``<var>/serving/live.json`` (contract, read by the regulation service whenever it changes)::

    {"url": "http://127.0.0.1:PORT", "model_version": "3", "model_uri": "models:/NAME/3",
     "pid": 1234, "start_ticks": 98765, "port": PORT, "started_at": "...",
     "switched_at": "...", "reason": "promote"}

Only promotion, rollback and the supervisor replace it, always atomically (a temporary file
renamed over it), so a reader sees the old routing or the new one, never half of either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.partitions import write_json
from pipelines.registry.server import ServerHandle, is_running


@dataclass(frozen=True)
class LiveRoute:
    url: str
    model_version: str
    model_uri: str
    pid: int
    start_ticks: int  # with pid, names the server process for good (PIDs are reused)
    port: int
    started_at: str
    switched_at: str
    reason: str

    @classmethod
    def for_server(cls, handle: ServerHandle, reason: str) -> LiveRoute:
        return cls(
            url=handle.url,
            model_version=handle.version,
            model_uri=handle.model_uri,
            pid=handle.pid,
            start_ticks=handle.start_ticks,
            port=handle.port,
            started_at=handle.started_at,
            switched_at=datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def running(self) -> bool:
        return is_running(self.pid, self.start_ticks)


def read_live(path: Path) -> LiveRoute | None:
    """The current routing, or None when nothing was ever switched in."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LiveRoute(
            url=str(data["url"]),
            model_version=str(data["model_version"]),
            model_uri=str(data["model_uri"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            port=int(data["port"]),
            started_at=str(data["started_at"]),
            switched_at=str(data["switched_at"]),
            reason=str(data.get("reason", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the live routing file {path} is unreadable: {exc}") from exc


def write_live(path: Path, route: LiveRoute) -> None:
    write_json(route.to_dict(), path)


def restore_live(path: Path, route: LiveRoute | None) -> None:
    """Put back what was there before a switch that did not complete."""
    if route is None:
        path.unlink(missing_ok=True)
    else:
        write_live(path, route)
