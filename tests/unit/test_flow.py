"""pipelines.flow: interval resolution, error classes, the "nothing new" check, training keys,
gate and validation refusals, and the promotion wrappers (no Airflow involved)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines import flow
from pipelines.params import GateParams, Params, PrepareParams, RetrainParams, load_params
from pipelines.partitions import write_json
from pipelines.settings import Settings
from pipelines.store.db import StoreError
from pipelines.tracking import TrackingError

# --- interval ------------------------------------------------------------------------------


def test_conf_interval_wins_over_the_runs_own() -> None:
    ref = flow.resolve_interval(
        {"start": "2026-11-03", "end": "2026-11-04T06:00:00"},
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    assert ref.to_dict() == {
        "start": "2026-11-03T00:00:00+00:00",
        "end": "2026-11-04T06:00:00+00:00",
        "key": "interval=2026-11-03_2026-11-04T06-00-00",
    }


def test_the_runs_data_interval_is_used_without_conf() -> None:
    ref = flow.resolve_interval(
        {"start": None, "end": None, "max_train_rows": None},
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    assert ref.key == "interval=2026-11-01_2026-11-02"
    assert ref.interval().end == datetime(2026, 11, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("conf", "start", "end", "message"),
    [
        ({}, None, None, "has no data interval"),
        ({"start": "2026-11-01"}, None, None, "give both conf start and end"),
        ({"start": "2026-11-01", "end": "soon"}, None, None, "not an ISO date"),
        ({"start": "2026-11-02", "end": "2026-11-01"}, None, None, "must be after its start"),
        # A trigger timetable's run: start == end.
        ({}, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), "unusable"),
    ],
)
def test_unusable_intervals_are_permanent_errors(
    conf: dict[str, Any], start: datetime | None, end: datetime | None, message: str
) -> None:
    with pytest.raises(flow.PermanentError, match=message) as caught:
        flow.resolve_interval(conf, start, end)
    assert caught.value.retryable is False


# --- transient or permanent ----------------------------------------------------------------


def _mlflow_error(code: str, message: str = "boom") -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    return MlflowException(message, error_code=getattr(databricks_pb2, code))


def _caused_by(cause: Exception) -> Exception:
    try:
        raise cause
    except Exception as exc:
        try:
            raise RuntimeError("cannot register the model") from exc
        except RuntimeError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        TrackingError("cannot use the MLflow tracking store"),
        StoreError("chat store locked"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("read timed out"),
        flow.TransientError("x"),
        _caused_by(TrackingError("unreachable")),
    ],
    ids=repr,
)
def test_transient_errors(exc: Exception) -> None:
    assert flow.is_transient(exc)


def test_transient_mlflow_errors_by_code_and_message() -> None:
    assert flow.is_transient(_mlflow_error("TEMPORARILY_UNAVAILABLE"))
    assert flow.is_transient(_mlflow_error("INTERNAL_ERROR", "(sqlite3) database is locked"))
    assert not flow.is_transient(_mlflow_error("RESOURCE_DOES_NOT_EXIST"))
    assert not flow.is_transient(_mlflow_error("INVALID_PARAMETER_VALUE"))


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad labels"),
        FileNotFoundError("no raw.parquet"),
        KeyError("run_id"),
        flow.PermanentError("x"),
        flow.GateRejected("r1", ["macro_f1 0.2 < floor 0.7"]),
        _caused_by(ValueError("bad")),
    ],
    ids=repr,
)
def test_permanent_errors(exc: Exception) -> None:
    assert not flow.is_transient(exc)


def test_a_permanent_flow_error_is_not_made_transient_by_its_cause() -> None:
    try:
        raise flow.PermanentError("validation failed") from TrackingError("also down")
    except flow.PermanentError as exc:
        assert not flow.is_transient(exc)


def test_steps_raise_only_flow_errors(settings: Settings) -> None:
    # No chat store file: StoreError -> transient (retry: the store may come up).
    with pytest.raises(flow.TransientError, match="ingest: StoreError") as store:
        flow.ingest({"start": "2026-11-01", "end": "2026-11-02"})
    assert isinstance(store.value.__cause__, StoreError)
    # No prepared dataset: permanent (a retry reads the same nothing).
    with pytest.raises(flow.PermanentError, match=r"manifest\.json not found"):
        flow.train()


# --- training key --------------------------------------------------------------------------


def test_training_key_is_stable_and_covers_data_params_and_code() -> None:
    params = load_params()
    key = flow.training_key("h1", params.labels, params.train, "abc")
    assert len(key) == 64 and int(key, 16) >= 0
    assert flow.training_key("h1", list(params.labels), params.train, "abc") == key
    capped = flow.with_max_train_rows(params, 2000)
    others = {
        flow.training_key("h2", params.labels, params.train, "abc"),
        flow.training_key("h1", ("neg", "pos"), params.train, "abc"),
        flow.training_key("h1", params.labels, capped.train, "abc"),
        flow.training_key("h1", params.labels, params.train, "abc-dirty"),
    }
    assert key not in others and len(others) == 4
    assert capped.train.max_train_rows == 2000
    assert flow.with_max_train_rows(params, None) is params
    with pytest.raises(flow.PermanentError, match="bad max_train_rows 0"):
        flow.with_max_train_rows(params, 0)


# --- validation refusal --------------------------------------------------------------------


def test_failed_validation_is_a_permanent_rejection_with_a_summary(settings: Settings) -> None:
    from tests.data.fixtures.messages import INTERVAL, make_messages, write_raw

    frame = make_messages(30)
    customers = frame.index[frame["role"] == "customer"]
    frame.loc[customers[::2], "text"] = "在吗？"
    directory = write_raw(settings.partitions_dir, frame)

    with pytest.raises(flow.ValidationRejected) as caught:
        flow.validate(flow.IntervalRef.of(INTERVAL))
    rejected = caught.value
    assert not rejected.retryable and not flow.is_transient(rejected)
    assert rejected.summary == (
        "validation failed: partition interval=2026-11-01_2026-11-02 failed suite 'messages' "
        "(1 expectation(s): expect_column_proportion_of_unique_values_to_be_between(text) "
        "where role == 'customer'); 120 rows quarantined"
    )
    assert rejected.report == str(directory / "validation.json")
    assert rejected.reason.startswith(rejected.summary + "\n")
    assert not (directory / "validated.parquet").exists()


# --- "nothing new" and the gate, against a real MLflow store -------------------------------

TRAIN_IDS = ["f1", "f2", "f3", "p1"]  # what the champion trained on
VALIDATION_IDS = ["f4"]


@dataclass(frozen=True)
class Registry:
    settings: Settings
    params: Params
    champion_run: str
    bare_run: str  # a run that logged no ids
    shuffled_run: str  # a pyfunc trained on shuffled labels


def _prepared(settings: Settings) -> None:
    """Prepared splits: feedback f1..f9, prediction p1..p3, bootstrap b1..b6."""

    def rows(ids: list[str], source: str) -> list[dict[str, str]]:
        return [{"id": i, "text": f"text {i}", "label": "neutral", "source": source} for i in ids]

    train = rows(["f1", "f2", "f3", "f5", "f6", "f7"], "feedback")
    train += rows(["p1", "p2"], "prediction") + rows(["b1", "b2", "b3", "b4"], "snownlp")
    validation = rows(["f4", "f8", "f9"], "feedback") + rows(["p3"], "prediction")
    validation += rows(["b5", "b6"], "synthetic")
    directory = settings.prepared_dir
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train).to_parquet(directory / "train.parquet", index=False)
    pd.DataFrame(validation).to_parquet(directory / "validation.parquet", index=False)
    write_json({"content_hash": "feed" * 16}, directory / "manifest.json")


def _log_ids(run_id: str, artifact: str, ids: list[str], tmp: Path) -> None:
    from mlflow import MlflowClient

    path = tmp / Path(artifact).name
    pd.DataFrame({"id": ids, "label": "neutral"}).to_parquet(path, index=False)
    MlflowClient().log_artifact(run_id, str(path), str(Path(artifact).parent))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    import mlflow

    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow
    from tests.helpers_models import (
        TfidfModel,
        log_pyfunc,
        make_corpus,
        shuffled,
        use_embedded_stores,
    )

    root = tmp_path_factory.mktemp("flow")
    with pytest.MonkeyPatch.context() as mp:
        use_embedded_stores(mp, root)
        settings = get_settings()
        params = load_params(settings.params_path).model_copy(
            update={"retrain": RetrainParams(min_new_labelled_rows=4)}
        )
        configure_mlflow(settings)
        train = make_corpus(40, seed=0)
        champion_run = log_pyfunc(TfidfModel(train["text"], train["label"]), run_name="champ")
        bare_run = log_pyfunc(TfidfModel(train["text"], train["label"]), run_name="bare")
        bad = TfidfModel(train["text"], shuffled(train["label"], seed=5))
        shuffled_run = log_pyfunc(bad, run_name="shuffled")
        _log_ids(champion_run, flow.TRAIN_IDS_ARTIFACT, TRAIN_IDS, root)
        _log_ids(champion_run, flow.VALIDATION_IDS_ARTIFACT, VALIDATION_IDS, root)
        _prepared(settings)
        yield Registry(settings, params, champion_run, bare_run, shuffled_run)
        mlflow.set_tracking_uri(None)
    get_settings.cache_clear()


def _named(registry: Registry, name: str) -> Settings:
    return registry.settings.model_copy(update={"registered_model_name": name})


def _crown(settings: Settings, run_id: str) -> str:
    """Register ``run_id`` under the settings' model name and make it the champion."""
    import mlflow

    from pipelines.tracking import client

    version = mlflow.register_model(f"runs:/{run_id}/model", settings.registered_model_name)
    client(settings).set_registered_model_alias(
        settings.registered_model_name, "champion", str(version.version)
    )
    return str(version.version)


def test_without_a_champion_or_challenger_it_always_trains(registry: Registry) -> None:
    check = flow.check_new_data(settings=_named(registry, "no-champion"), params=registry.params)
    assert check.proceed is True
    assert check.new_labelled_rows is None and check.baseline_version is None
    assert check.baseline_alias is None
    assert check.labelled_rows == 9  # f1..f9; predictions are off by default
    assert check.reason.startswith("no champion or challenger of no-champion yet")


def test_without_a_champion_the_waiting_challenger_is_the_baseline(registry: Registry) -> None:
    import mlflow

    from pipelines.tracking import client

    settings = _named(registry, "challenger-only")
    version = mlflow.register_model(
        f"runs:/{registry.champion_run}/model", settings.registered_model_name
    )
    client(settings).set_registered_model_alias(
        settings.registered_model_name, "challenger", str(version.version)
    )
    strict = registry.params.model_copy(update={"retrain": RetrainParams(min_new_labelled_rows=6)})

    check = flow.check_new_data(settings=settings, params=strict)

    # The challenger trained on f1-f3 and validated on f4: 5 new rows, below 6.
    assert check.proceed is False and check.new_labelled_rows == 5
    assert (check.baseline_alias, check.baseline_version) == ("challenger", str(version.version))
    assert f"new since challenger version {version.version};" in check.reason


def test_new_rows_are_those_the_champion_never_saw(registry: Registry) -> None:
    settings = _named(registry, "with-champion")
    version = _crown(settings, registry.champion_run)

    check = flow.check_new_data(settings=settings, params=registry.params)
    # f1..f9 labelled; the champion trained on f1-f3 and validated on f4: f5-f9 are new.
    assert (check.new_labelled_rows, check.labelled_rows, check.threshold) == (5, 9, 4)
    assert check.proceed is True and check.baseline_version == version
    assert check.baseline_alias == "champion"
    assert check.reason == (
        f"5 of 9 labelled partition rows in the prepared train/validation splits are new since "
        f"champion version {version}; threshold retrain.min_new_labelled_rows=4: training"
    )

    strict = registry.params.model_copy(update={"retrain": RetrainParams(min_new_labelled_rows=6)})
    skip = flow.check_new_data({"content_hash": "feed" * 16}, settings=settings, params=strict)
    assert skip.proceed is False and skip.new_labelled_rows == 5
    assert skip.reason.startswith("nothing new enough: 5 of 9 ")
    assert skip.reason.endswith(": skipping train, evaluate, register")

    # Self-training on: p1 was trained on, p2 and p3 are new labelled rows too.
    predicted = registry.params.model_copy(
        update={"prepare": PrepareParams(use_predicted_labels=True)}
    )
    with_predictions = flow.check_new_data(settings=settings, params=predicted)
    assert (with_predictions.new_labelled_rows, with_predictions.labelled_rows) == (7, 12)


def test_a_champion_without_training_ids_never_skips(registry: Registry) -> None:
    settings = _named(registry, "bare-champion")
    _crown(settings, registry.bare_run)
    strict = registry.params.model_copy(
        update={"retrain": RetrainParams(min_new_labelled_rows=1000)}
    )
    check = flow.check_new_data(settings=settings, params=strict)
    assert check.proceed is True and check.new_labelled_rows is None
    assert "logged no training ids" in check.reason


def test_a_changed_prepared_dataset_is_refused(registry: Registry) -> None:
    with pytest.raises(flow.PermanentError, match="changed since this run prepared it"):
        flow.check_new_data(
            {"content_hash": "0" * 64}, settings=registry.settings, params=registry.params
        )


def test_a_rejected_gate_is_permanent_and_nothing_is_registered(registry: Registry) -> None:
    from pipelines.tracking import client
    from tests.helpers_models import make_corpus

    settings = _named(registry, "gated")
    make_corpus(20, seed=1).to_parquet(settings.prepared_dir / "test.parquet")
    params = registry.params.model_copy(
        update={"gate": GateParams(min_macro_f1=0.9, min_negative_recall=0.9)}
    )
    with pytest.raises(flow.GateRejected) as caught:
        flow.evaluate(registry.shuffled_run, settings=settings, params=params)
    rejected = caught.value
    assert not flow.is_transient(rejected)
    assert rejected.run_id == registry.shuffled_run
    assert any(r.startswith("macro_f1 ") and "< floor 0.9000" in r for r in rejected.reasons)
    assert rejected.reason.startswith(f"gate rejected run {registry.shuffled_run}: macro_f1 ")

    with pytest.raises(flow.GateRejected, match=f"gate rejected run {registry.shuffled_run}"):
        flow.register(registry.shuffled_run, settings=settings)
    versions = client(settings).search_model_versions("name = 'gated'")
    assert list(versions) == []


# --- promotion wrappers --------------------------------------------------------------------


def test_promotion_outcomes_and_failures(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.registry import promotion

    def refused(settings: Settings, params: Params) -> promotion.PromotionOutcome:
        return promotion.PromotionOutcome("refused", "3", reason="stale-champion: v1 vs v2")

    def busy(settings: Settings, params: Params) -> promotion.PromotionOutcome:
        raise promotion.PromotionBusy("another promotion is running")

    def broken(settings: Settings, params: Params, reason: str) -> promotion.PromotionOutcome:
        raise promotion.PromotionError("version 4 was not switched in: smoke test failed")

    monkeypatch.setattr(promotion, "promote_approved", refused)
    assert flow.promote().to_dict() == {
        "action": "refused",
        "version": "3",
        "previous_version": None,
        "url": None,
        "reason": "stale-champion: v1 vs v2",
    }
    monkeypatch.setattr(promotion, "ensure_serving", busy)
    with pytest.raises(flow.TransientError, match="another promotion holds the lock"):
        flow.check_serving()
    monkeypatch.setattr(promotion, "rollback", broken)
    with pytest.raises(flow.PermanentError, match="the old champion keeps serving"):
        flow.rollback("v2 is wrong")
    with pytest.raises(flow.PermanentError, match="rollback needs a reason"):
        flow.rollback("  ")
