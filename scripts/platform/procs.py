"""Start, find, check and stop long-running processes by PID file.

Each process runs in its own session (so it outlives ``make run`` and its process group is its
PID), writes to one log file, and is described by a JSON PID file holding its PID and creation
time: a PID reused by an unrelated process is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from scripts.platform.config import PlatformConfig, PlatformError

Ready = Callable[[float], bool]  # given the process's creation time: is it up and healthy?


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    is_ready: Ready
    port: int | None = None
    url: str = ""
    ready_timeout_s: float = 150.0


@dataclass(frozen=True)
class Record:
    """The content of a PID file."""

    name: str
    pid: int
    create_time: float
    port: int | None
    started_at: str
    argv: list[str] = field(default_factory=list)


def pid_path(cfg: PlatformConfig, name: str) -> Path:
    return cfg.pids_dir / f"{name}.json"


def log_path(cfg: PlatformConfig, name: str) -> Path:
    return cfg.logs_dir / f"{name}.log"


def read_record(cfg: PlatformConfig, name: str) -> Record | None:
    path = pid_path(cfg, name)
    try:
        return Record(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def records(cfg: PlatformConfig) -> list[Record]:
    """Every PID file present, whatever the service (also ones a test or older run left)."""
    found = (read_record(cfg, path.stem) for path in sorted(cfg.pids_dir.glob("*.json")))
    return [record for record in found if record is not None]


def _write_record(cfg: PlatformConfig, record: Record) -> None:
    path = pid_path(cfg, record.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=1) + "\n")
    tmp.replace(path)


def remove_record(cfg: PlatformConfig, name: str) -> None:
    pid_path(cfg, name).unlink(missing_ok=True)


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def leader(record: Record) -> psutil.Process | None:
    """The recorded process if it still runs (same PID and creation time), else None."""
    try:
        proc = psutil.Process(record.pid)
        same = abs(proc.create_time() - record.create_time) < 0.5
    except psutil.Error:
        return None
    return proc if same and _running(proc) else None


def members(record: Record) -> list[psutil.Process]:
    """The processes of the record's session: its group plus the leader's descendants."""
    with contextlib.suppress(psutil.Error):
        if abs(psutil.Process(record.pid).create_time() - record.create_time) >= 0.5:
            return []  # the PID (and so the group id) now belongs to another process
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == record.pid and proc.create_time() >= record.create_time - 1:
                found[proc.pid] = proc
    head = leader(record)
    if head is not None:
        found[head.pid] = head
        with contextlib.suppress(psutil.Error):
            found.update((child.pid, child) for child in head.children(recursive=True))
    return [proc for proc in found.values() if _running(proc)]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_owner(port: int) -> str:
    """Who listens on ``port``, as far as this user may see."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    break
                with contextlib.suppress(psutil.Error):
                    cmd = " ".join(psutil.Process(conn.pid).cmdline())[:120]
                    return f"pid {conn.pid}: {cmd}"
                return f"pid {conn.pid}"
    return "another process"


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def spawn(cfg: PlatformConfig, service: Service) -> tuple[Record, subprocess.Popen[bytes]]:
    """Start ``service`` in a new session, its output appended to its log; write its PID file."""
    log = log_path(cfg, service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with log.open("ab") as out:
        out.write(f"\n===== {now} start: {' '.join(service.argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            list(service.argv),
            cwd=cfg.repo,
            env=dict(service.env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    created = psutil.Process(popen.pid).create_time()
    record = Record(service.name, popen.pid, created, service.port, now, list(service.argv))
    _write_record(cfg, record)
    return record, popen


def wait_ready(
    cfg: PlatformConfig,
    pending: Sequence[tuple[Service, Record, subprocess.Popen[bytes] | None]],
    say: Callable[[str], None] = print,
) -> None:
    """Wait until every service is healthy; on an exit or a timeout raise with the log's tail."""
    start = time.monotonic()
    waiting = list(pending)
    while waiting:
        for item in list(waiting):
            service, record, popen = item
            if leader(record) is None:
                code = popen.poll() if popen is not None else None
                status = f" with status {code}" if code is not None else ""
                raise _start_error(cfg, service, f"exited{status} during start-up")
            if service.is_ready(record.create_time):
                say(f"  {service.name:<22} healthy after {time.monotonic() - start:4.0f} s")
                waiting.remove(item)
            elif time.monotonic() - start > service.ready_timeout_s:
                raise _start_error(cfg, service, f"not ready after {service.ready_timeout_s:.0f} s")
        if waiting:
            time.sleep(0.5)


def _start_error(cfg: PlatformConfig, service: Service, what: str) -> PlatformError:
    log = log_path(cfg, service.name)
    return PlatformError(f"{service.name} {what}; last lines of {log}:\n{log_tail(log)}")


def stop(targets: Sequence[Record], timeout_s: float = 30.0) -> list[psutil.Process]:
    """SIGTERM the records' processes together, SIGKILL what is left after ``timeout_s``.

    Returns the processes that survived both.
    """
    procs = _alive(proc for record in targets for proc in members(record))
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while procs and time.monotonic() < deadline:
            time.sleep(0.2)
            procs = _alive(procs)
        # children forked while we waited (a scheduler spawning a worker) are caught here
        procs = _alive([*procs, *(proc for record in targets for proc in members(record))])
        if not procs:
            break
    return procs


def _alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    return list({proc.pid: proc for proc in procs if _running(proc)}.values())


@contextlib.contextmanager
def platform_lock(cfg: PlatformConfig) -> Iterator[None]:
    """One start or stop at a time (a second ``make run`` waits for the first to finish)."""
    cfg.platform_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.platform_dir / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another start/stop of the platform to finish...", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
