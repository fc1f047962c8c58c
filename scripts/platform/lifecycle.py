"""Bring services up (reusing what runs), take them down by PID, report what runs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from scripts.platform.config import PlatformConfig, PlatformError
from scripts.platform.procs import (
    Record,
    Service,
    leader,
    log_path,
    members,
    platform_lock,
    port_in_use,
    port_owner,
    read_record,
    records,
    remove_record,
    spawn,
    stop,
    wait_ready,
)
from scripts.platform.services import migrate_airflow_db

Say = Callable[[str], None]
_URL_SETTING = {"mlflow": "EMOREG_MLFLOW_UI_URL", "airflow-api": "EMOREG_AIRFLOW_URL"}


@dataclass(frozen=True)
class Row:
    """One line of ``status``."""

    name: str
    pid: int | None
    port: int | None
    state: str  # healthy | starting/unhealthy | stopped
    url: str
    log: str


def _running_record(cfg: PlatformConfig, service: Service) -> Record | None:
    record = read_record(cfg, service.name)
    if record is None or leader(record) is None:
        return None
    if record.port != service.port:
        raise PlatformError(
            f"{service.name} runs (pid {record.pid}) on port {record.port}, not {service.port}: "
            "run `make stop` first"
        )
    return record


def _check_port(service: Service) -> None:
    if service.port is None or not port_in_use(service.port):
        return
    setting = _URL_SETTING.get(service.name, "its URL setting")
    raise PlatformError(
        f"port {service.port} on 127.0.0.1 is already in use by {port_owner(service.port)}, "
        f"so {service.name} cannot start there. Stop that process, or pick a free port with "
        f"{setting}=http://127.0.0.1:PORT"
    )


def _clear_leftovers(cfg: PlatformConfig, service: Service, say: Say) -> None:
    """Processes left in the group of a dead leader (for example orphaned executor workers)."""
    record = read_record(cfg, service.name)
    if record is None:
        return
    if members(record):
        say(f"  {service.name:<22} leftover processes of pid {record.pid}: stopping them")
        stop([record], timeout_s=10)
    remove_record(cfg, service.name)


def start(cfg: PlatformConfig, services: Sequence[Service], say: Say = print) -> dict[str, str]:
    """Start what is not running, reuse what runs; wait until all are healthy.

    Returns ``{name: "started" | "reused"}``. Raises ``PlatformError`` on a taken port, a
    process that exits during start-up, or one not healthy in time (with its log's tail).
    """
    with platform_lock(cfg):
        plan = [(service, _running_record(cfg, service)) for service in services]
        missing = [service for service, record in plan if record is None]
        for service in missing:
            _clear_leftovers(cfg, service, say)
            _check_port(service)
        if any(service.name.startswith("airflow") for service in missing):
            say("  airflow db migrate")
            migrate_airflow_db(cfg)
        pending: list[tuple[Service, Record, subprocess.Popen[bytes] | None]] = []
        outcome: dict[str, str] = {}
        for service, record in plan:
            if record is None:
                record, popen = spawn(cfg, service)
                say(f"  {service.name:<22} started (pid {record.pid})")
                pending.append((service, record, popen))
                outcome[service.name] = "started"
            else:
                say(f"  {service.name:<22} already running (pid {record.pid}): reused")
                pending.append((service, record, None))
                outcome[service.name] = "reused"
        wait_ready(cfg, pending, say)
    return outcome


def stop_named(cfg: PlatformConfig, names: Sequence[str], say: Say = print) -> list[str]:
    """Stop the named services by PID file, together; descriptions of processes that survived."""
    with platform_lock(cfg):
        unique = dict.fromkeys(names)
        found = [record for name in unique if (record := read_record(cfg, name)) is not None]
        running = {record.name: members(record) for record in found}
        for record in found:
            if not running[record.name]:
                say(f"  {record.name:<22} not running")
                remove_record(cfg, record.name)
        targets = [record for record in found if running[record.name]]
        left = stop(targets)
        survivors = []
        for record in targets:
            mine = [proc for proc in left if proc in running[record.name] or _in(record, proc)]
            if mine:
                survivors += [f"{record.name}: pid {proc.pid}" for proc in mine]
                say(f"  {record.name:<22} {len(mine)} process(es) survived SIGKILL")
                continue
            count = len(running[record.name])
            say(f"  {record.name:<22} stopped (pid {record.pid}, {count} process(es))")
            remove_record(cfg, record.name)
    return survivors


def _in(record: Record, proc: psutil.Process) -> bool:
    return any(member.pid == proc.pid for member in members(record))


def recorded_names(cfg: PlatformConfig) -> list[str]:
    return [record.name for record in records(cfg)]


def status_rows(cfg: PlatformConfig, services: Sequence[Service]) -> list[Row]:
    rows = []
    for service in services:
        record = read_record(cfg, service.name)
        alive = record is not None and leader(record) is not None
        if record is None or not alive:
            state = "stopped"
        elif service.is_ready(record.create_time):
            state = "healthy"
        else:
            state = "running, not healthy"
        rows.append(
            Row(
                name=service.name,
                pid=record.pid if record is not None and alive else None,
                port=service.port,
                state=state,
                url=service.url,
                log=str(log_path(cfg, service.name)),
            )
        )
    return rows
