"""Run a script in a fresh Python process where this repository cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

_BLOCK_REPOSITORY = textwrap.dedent(
    """
    import json, sys
    class NoPipelines:
        def find_spec(self, name, path=None, target=None):
            if name == "pipelines" or name.startswith(("pipelines.", "tests")):
                raise ImportError("this repository is not available")
    sys.meta_path.insert(0, NoPipelines())
    """
)


def run_without_repository(body: str, cwd: Path) -> Any:
    """Run ``body`` (its last stdout line is JSON) with ``import pipelines`` failing; the JSON."""
    env = {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_REPOSITORY + textwrap.dedent(body)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
