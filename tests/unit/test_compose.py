"""The production stack's compose file is valid Compose v2 (checked offline, no Docker engine)."""

from __future__ import annotations

import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> str:
    packaged = files("compose") / "docker-compose"
    return str(packaged)


def run_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(compose_file), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=compose_file.parent,
    )


def test_compose_file_is_valid():
    result = run_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr


def test_compose_validation_catches_a_broken_file(tmp_path):
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["mlflow"]["depends_on"] = {"nowhere": {"condition": "service_healthy"}}
    shutil.copytree(ROOT / "docker", tmp_path / "docker")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = run_config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0
    assert "nowhere" in result.stderr


@pytest.mark.parametrize("service", ["postgres", "mlflow"])
def test_published_ports_bind_to_loopback_only(service):
    stack = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for port in stack["services"][service].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
