"""The promote and rollback DAGs end to end with ``dag.test()`` and real model servers.

Small sklearn pyfuncs (tests/helpers_models.py) are registered the way ``register`` leaves them
and served by real ``mlflow models serve`` processes on 127.0.0.1. One module-scoped scenario:

1. promote with nothing approved: both tasks green, nothing happens;
2. version 1 approved: promoted, served, champion;
3. version 2 approved (evidence against v1): promoted, v1 becomes previous;
4. version 3 approved on stale evidence (compared to v1, champion is v2): refused, green;
5. rollback with a reason: v1 serves again;
6. version 4 (answers everything neutral) approved: its smoke test fails, the promote task fails
   at once (no retry) and v1 keeps serving.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.dags.dagrun import RunRecord, run_dag
from tests.dags.tiny_platform import UNSET_ENV

PROMOTE = "promote_emotion_classifier"
ROLLBACK = "rollback_emotion_classifier"
MODEL = "emotion-classifier"
ROLLBACK_REASON = "v2 calls complaints neutral (ticket 4711)"


@dataclass(frozen=True)
class Step:
    run: RunRecord
    aliases: dict[str, str]
    live_version: str | None  # the version the live routing file names
    answers: bool  # the live URL answers /invocations


@dataclass(frozen=True)
class Scenario:
    nothing_approved: Step
    first: Step
    second: Step
    stale: Step
    rolled_back: Step
    broken: Step
    tags: dict[str, dict[str, str]]  # version -> tags, at the end


def _client() -> Any:
    from pipelines.settings import get_settings
    from pipelines.tracking import client

    return client(get_settings())


def _register(run_id: str, compared_to: str) -> str:
    """What the retrain DAG's register task leaves: tags, then the challenger alias."""
    version = mlflow.register_model(
        f"runs:/{run_id}/model",
        MODEL,
        tags={"gate": "blessed", "compared_to": compared_to, "approval": "pending"},
    )
    _client().set_registered_model_alias(MODEL, "challenger", str(version.version))
    return str(version.version)


def _classifies(url: str) -> bool:
    payload = {"dataframe_split": {"columns": ["text"], "data": [["质量太差了，要求退款"]]}}
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(payload, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bool(json.loads(response.read())["predictions"])
    except OSError:
        return False


def _step(dag_id: str, conf: dict[str, Any] | None = None) -> Step:
    from pipelines.registry.live import read_live
    from pipelines.settings import get_settings

    run = run_dag(dag_id, conf)
    model = _client().get_registered_model(MODEL)
    live = read_live(get_settings().live_file)
    return Step(
        run=run,
        aliases={k: str(v) for k, v in model.aliases.items()},
        live_version=live.model_version if live else None,
        answers=bool(live and _classifies(live.url)),
    )


@pytest.fixture(scope="module")
def scenario(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    from pipelines.registry.approval import approve
    from pipelines.registry.server import stop_all
    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow
    from tests.helpers_models import ConstantModel, TfidfModel, log_pyfunc, make_corpus

    root = tmp_path_factory.mktemp("promotion-dags")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOREG_VAR_DIR", str(root / "var"))
        mp.setenv("EMOREG_DATA_DIR", str(root / "data"))
        mp.setenv("EMOREG_MODEL_SERVER_DRAIN_S", "0.5")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in UNSET_ENV:
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        try:
            configure_mlflow(settings)
            a, b = make_corpus(40, seed=0), make_corpus(40, seed=1)
            good_a = log_pyfunc(TfidfModel(a.text, a.label), run_name="good-a")
            good_b = log_pyfunc(TfidfModel(b.text, b.label, seed=1), run_name="good-b")
            constant = log_pyfunc(ConstantModel(), run_name="constant")

            v1 = _register(good_a, compared_to="none")
            nothing_approved = _step(PROMOTE)
            approve(settings, v1, "lead-a")
            first = _step(PROMOTE)
            v2 = _register(good_b, compared_to=v1)
            approve(settings, v2, "lead-b")
            second = _step(PROMOTE)
            v3 = _register(good_a, compared_to=v1)  # evidence about v1; v2 is champion now
            approve(settings, v3, "lead-c")
            stale = _step(PROMOTE)
            rolled_back = _step(ROLLBACK, {"reason": ROLLBACK_REASON})
            v4 = _register(constant, compared_to=v1)
            approve(settings, v4, "lead-d")
            broken = _step(PROMOTE)
            client = _client()
            tags = {v: dict(client.get_model_version(MODEL, v).tags) for v in (v1, v2, v3, v4)}
            yield Scenario(nothing_approved, first, second, stale, rolled_back, broken, tags)
        finally:
            stopped = stop_all(settings)
            mlflow.set_tracking_uri(None)
            get_settings.cache_clear()
    assert len(stopped) <= 1, f"more than the live server was still running: {stopped}"


def _green(step: Step, *tasks: str) -> None:
    assert step.run.state == "success", step.run.tasks
    assert {t: s for t, (s, _) in step.run.tasks.items()} == dict.fromkeys(tasks, "success")


def test_nothing_approved_means_nothing_happens(scenario: Scenario) -> None:
    step = scenario.nothing_approved
    _green(step, "check_serving", "promote")
    assert step.run.xcoms["check_serving"]["action"] == "none"
    assert step.run.xcoms["promote"] == {
        "action": "none",
        "version": None,
        "previous_version": None,
        "url": None,
        "reason": "no approval waits",
    }
    assert step.aliases == {"challenger": "1"}
    assert step.live_version is None
    assert "nothing to promote: no approval waits" in step.run.log


def test_approved_versions_are_promoted_blue_green(scenario: Scenario) -> None:
    first, second = scenario.first, scenario.second
    _green(first, "check_serving", "promote")
    assert first.run.xcoms["promote"]["action"] == "promoted"
    assert first.run.xcoms["promote"]["version"] == "1"
    assert first.aliases == {"champion": "1"}
    assert (first.live_version, first.answers) == ("1", True)

    _green(second, "check_serving", "promote")
    assert second.run.xcoms["check_serving"]["action"] == "healthy"  # v1 was up
    promoted = second.run.xcoms["promote"]
    assert (promoted["action"], promoted["version"], promoted["previous_version"]) == (
        "promoted",
        "2",
        "1",
    )
    assert second.aliases == {"champion": "2", "previous": "1"}
    assert (second.live_version, second.answers) == ("2", True)


def test_a_stale_approval_is_refused_and_the_run_stays_green(scenario: Scenario) -> None:
    step = scenario.stale
    _green(step, "check_serving", "promote")
    refused = step.run.xcoms["promote"]
    assert (refused["action"], refused["version"]) == ("refused", "3")
    assert refused["reason"].startswith("stale-champion")
    assert step.aliases == {"champion": "2", "previous": "1", "challenger": "3"}
    assert step.live_version == "2"
    assert scenario.tags["3"]["approval"] == "refused:stale-champion"
    assert "approval of version 3 refused: stale-champion" in step.run.log


def test_rollback_serves_the_previous_version_with_the_reason(scenario: Scenario) -> None:
    step = scenario.rolled_back
    _green(step, "rollback")
    outcome = step.run.xcoms["rollback"]
    assert (outcome["action"], outcome["version"], outcome["previous_version"]) == (
        "rolled_back",
        "1",
        "2",
    )
    assert outcome["reason"] == ROLLBACK_REASON
    assert step.aliases == {"champion": "1", "previous": "2", "challenger": "3"}
    assert (step.live_version, step.answers) == ("1", True)
    assert scenario.tags["2"]["rollback_reason"] == ROLLBACK_REASON


def test_a_failed_promotion_fails_the_task_once_and_keeps_the_champion(
    scenario: Scenario,
) -> None:
    step = scenario.broken
    assert step.run.state == "failed"
    assert step.run.tasks["check_serving"] == ("success", 1)
    assert step.run.tasks["promote"] == ("failed", 1)  # PromotionError: no retry
    reason = step.run.failure_reasons["promote"]
    assert reason.startswith(
        "promote failed (the old champion keeps serving): version 4 was not switched in"
    )
    assert step.aliases["champion"] == "1"
    assert (step.live_version, step.answers) == ("1", True)
