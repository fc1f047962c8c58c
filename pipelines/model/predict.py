"""``predict``: score a CSV of texts with a registered (or any logged) model.

Input: a UTF-8 CSV with a ``text`` column; every column is read as text and written back as it was
(identifiers keep their leading zeros). Output: the input columns, then ``label``, ``score`` and
``p_<label>`` per class; columns of those names already in the input are replaced. A file with
empty or blank texts is rejected as a whole, naming the rows: a placeholder prediction would be
indistinguishable from a real one downstream. The output is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.partitions import atomic_path
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "champion"
DEFAULT_BATCH_ROWS = 10_000  # rows per scoring call: bounds memory on large files
PREDICTION_COLUMNS = ("label", "score")


@dataclass(frozen=True)
class PredictResult:
    rows: int
    model_uri: str
    output: Path
    label_counts: dict[str, int]


def model_uri_for(
    settings: Settings, model_uri: str | None = None, alias: str | None = None
) -> str:
    """``model_uri`` if given, else ``models:/<registered name>@<alias or champion>``."""
    if model_uri and alias:
        raise ValueError("give either a model URI or an alias, not both")
    return model_uri or f"models:/{settings.registered_model_name}@{alias or DEFAULT_ALIAS}"


def read_texts_csv(path: Path) -> pd.DataFrame:
    """The CSV with every column as text; a clear error without a ``text`` column or texts."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        # Blank lines are rows too: in a one-column file they are empty texts, not noise.
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} as a UTF-8 CSV: {exc}") from exc
    if "text" not in frame.columns:
        raise ValueError(f"{path} has no 'text' column; its columns are {list(frame.columns)}")
    blank = [i + 1 for i, text in enumerate(frame["text"]) if not text.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:20])) + (" ..." if len(blank) > 20 else "")
        raise ValueError(
            f"{path}: {len(blank)} rows have an empty text (data rows {shown}, counted from 1 "
            "after the header); remove or fill them"
        )
    return frame


def score_frame(
    model: Any, frame: pd.DataFrame, batch_rows: int = DEFAULT_BATCH_ROWS
) -> pd.DataFrame:
    """``frame`` (prediction columns dropped) with the model's output columns appended."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    parts = [
        model.predict(frame.iloc[start : start + batch_rows][["text"]].reset_index(drop=True))
        for start in range(0, len(frame), batch_rows)
    ]
    scored = pd.concat(parts, ignore_index=True) if parts else model.predict(frame[["text"]])
    replaced = [c for c in scored.columns if c in frame.columns]
    if replaced:
        log.warning("input columns %s are replaced by the new predictions", replaced)
    kept = frame.drop(columns=replaced).reset_index(drop=True)
    return pd.concat([kept, scored], axis=1)


def load_model(settings: Settings, model_uri: str) -> Any:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import configure_mlflow

    configure_mlflow(settings)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ValueError(f"cannot load the model {model_uri}: {exc.message}") from exc


def predict_csv(
    settings: Settings,
    input_path: Path,
    output_path: Path,
    model_uri: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> PredictResult:
    """Score ``input_path`` with ``model_uri`` into ``output_path``, written whole or not at all."""
    frame = read_texts_csv(input_path)  # before loading the model: bad input fails fast
    scored = score_frame(load_model(settings, model_uri), frame, batch_rows)
    with atomic_path(output_path) as tmp:
        scored.to_csv(tmp, index=False, encoding="utf-8")
    counts = {str(k): int(v) for k, v in scored["label"].value_counts().sort_index().items()}
    return PredictResult(len(scored), model_uri, output_path, counts)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="CSV with a 'text' column")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model-uri", help="any MLflow model URI (default: the champion)")
    which.add_argument("--alias", help="a registered alias: champion, challenger, previous")
    parser.add_argument(
        "--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows per scoring call"
    )


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.settings import get_settings

    settings = get_settings()
    uri = model_uri_for(settings, args.model_uri, args.alias)
    result = predict_csv(settings, args.input, args.output, uri, args.batch_rows)
    counts = ", ".join(f"{label} {count}" for label, count in result.label_counts.items())
    print(f"{result.rows} rows scored with {result.model_uri} -> {result.output} ({counts})")
    return 0
