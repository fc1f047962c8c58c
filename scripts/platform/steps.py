"""Calls of ``python -m pipelines STEP`` (approve, serving-*), tolerant of a step not there yet."""

from __future__ import annotations

import importlib
import json
import subprocess
from collections.abc import Callable
from typing import Any

from scripts.platform.config import PlatformConfig
from scripts.platform.services import base_env


def available(step: str) -> bool:
    """Whether the pipelines CLI knows ``step`` (if the CLI cannot be read, let the call tell)."""
    try:
        steps = importlib.import_module("pipelines.cli").STEPS
    except Exception:
        return True
    return step in steps


def run_step(
    cfg: PlatformConfig,
    step: str,
    *args: str,
    capture: bool = False,
    say: Callable[[str], None] = print,
) -> subprocess.CompletedProcess[str] | None:
    """Run the step (output streamed unless ``capture``); None when the CLI lacks it."""
    if not available(step):
        say(f"  note: `python -m pipelines {step}` does not exist yet: skipped")
        return None
    done = subprocess.run(
        [str(cfg.venv_bin / "python"), "-m", "pipelines", step, *args],
        cwd=cfg.repo,
        env=base_env(cfg),
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        check=False,
    )
    if done.returncode == 2 and "invalid choice" in (done.stderr or ""):
        say(f"  note: `python -m pipelines {step}` does not exist yet: skipped")
        return None
    return done


def serving_status(cfg: PlatformConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The live routing (``var/serving/live.json``) as ``serving-status --json`` reports it.

    Falls back on reading the live file itself when the command is missing or fails.
    """
    done = run_step(cfg, "serving-status", "--json", capture=True, say=say)
    if done is not None and done.returncode == 0:
        try:
            status = json.loads(done.stdout)
        except ValueError:
            status = None
        if isinstance(status, dict):
            live = status.get("live", status)
            return live if isinstance(live, dict) else {}
    if done is not None:
        say(f"  warning: serving-status failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return read_live_file(cfg)


def read_live_file(cfg: PlatformConfig) -> dict[str, Any]:
    try:
        live = json.loads(cfg.live_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return live if isinstance(live, dict) else {}
