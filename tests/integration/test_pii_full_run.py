"""No personal data in any file or log line of a run, from store to prepared dataset.

A writer that bypassed the regulation service (an import, an older client) leaves every string
of the PII corpus (``tests/data/fixtures/pii_corpus.yaml``) in the chat store, raw, with agent
labels so that they are meant for training. Then the data half runs as the DAG runs it:
bootstrap, simulate, ingest, validate, prepare. No parquet file under ``data/``, no report and no
log line may contain one of the corpus's personal strings, and the order and tracking numbers
(prices, dates, models) it marks as kept must reach the partition.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.cli import main
from pipelines.data.text import normalize
from pipelines.settings import Settings
from tests.store.store_rows import add_feedback, add_message

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "pii_corpus.yaml"
START, END = "2026-11-01", "2026-11-03"


def load_corpus() -> list[dict[str, Any]]:
    raw = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    entries = raw["entries"] if isinstance(raw, dict) else raw
    assert isinstance(entries, list) and len(entries) >= 200
    return entries


def personal_strings(entries: list[dict[str, Any]]) -> set[str]:
    """Every personal value, as written and as normalisation writes it (full-width digits)."""
    values = {str(item["value"]) for entry in entries for item in entry.get("pii") or []}
    return values | {normalize(value) for value in values}


def _text_of_file(path: Path) -> str:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return "\n".join(str(value) for value in frame.to_numpy().ravel())
    return path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def run_output(
    settings: Settings,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:
    from pipelines.store.db import make_engine
    from pipelines.store.models import FeedbackSource

    entries = load_corpus()
    engine = make_engine(store_url)
    first = datetime(2026, 11, 1, 8)
    for i, entry in enumerate(entries):
        message_id = f"legacy-{i:04d}"
        created = first + timedelta(minutes=7 * i)
        add_message(engine, message_id, entry["text"], created, conversation_id=f"legacy-c{i}")
        add_feedback(
            engine,
            message_id,
            created + timedelta(minutes=1),
            label="neutral",
            source=FeedbackSource.agent,
        )
    engine.dispose()

    caplog.set_level(logging.DEBUG)
    steps = [
        ["bootstrap"],
        ["simulate", "--days", "2", "--start", START],
        ["ingest", "--start", START, "--end", END],
        ["validate", "--start", START, "--end", END],
        ["prepare", "--end", END],
    ]
    codes = {step[0]: main(step) for step in steps}
    captured = capsys.readouterr()
    logs = "\n".join(
        [record.getMessage() for record in caplog.records]
        + [str(record.args) for record in caplog.records]
    )
    return {
        "codes": codes,
        "entries": entries,
        "output": f"{captured.out}\n{captured.err}\n{logs}",
    }


def test_no_file_or_log_line_holds_personal_data(
    settings: Settings, run_output: dict[str, Any]
) -> None:
    # validate may fail the batch (the corpus is no natural traffic); its files are scanned too.
    assert run_output["codes"]["ingest"] == 0 and run_output["codes"]["prepare"] in (0, 2)
    files = [
        path
        for path in sorted(settings.data_dir.rglob("*"))
        if path.is_file() and path.suffix in (".parquet", ".json")
    ]
    names = {path.name for path in files}
    assert {"corpus.parquet", "raw.parquet", "validation.json"} <= names
    texts = {str(path.relative_to(settings.data_dir)): _text_of_file(path) for path in files}
    texts["stdout, stderr and logs"] = run_output["output"]

    secrets = personal_strings(run_output["entries"])
    leaks = {
        where: sorted(value for value in secrets if value in text) for where, text in texts.items()
    }
    assert {where: found for where, found in leaks.items() if found} == {}


def test_needed_numbers_reach_the_partition(settings: Settings, run_output: dict[str, Any]) -> None:
    raw = next(settings.partitions_dir.rglob("raw.parquet"))
    partition_text = "\n".join(pd.read_parquet(raw)["text"].tolist())
    # Order and tracking numbers, prices, dates, models: what the corpus marks as kept.
    needed = {
        normalize(str(item)).strip() for entry in run_output["entries"] for item in entry["keep"]
    }
    assert len(needed) >= 50
    lost = sorted(value for value in needed if value not in partition_text)
    assert lost == []
