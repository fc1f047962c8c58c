"""The pyfunc format: batched inference, fp16 storage, logging and loading offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.model.modeling import (
    TextClassifier,
    pad_batch,
    proba_frame,
    save_classifier,
    texts_of,
)
from pipelines.settings import Settings
from tests.clean_process import run_without_repository
from tests.tiny_unigram import build_tiny_unigram_model, log_tiny_classifier

LABELS = ("negative", "neutral", "positive")
TEXTS = ["很好", "质量太差了!!! 退货", "OK", "物流慢", "这个酒店很好，服务也不错", "客服"]
# Raw chat texts and, worked out by hand, the form prepare gives them (NFKC: full-width to
# half-width, entities decoded, invisible characters dropped, whitespace collapsed; PII redacted).
RAW_AND_PREPARED = [
    ("质量太差了&amp;退货，电话13812345678", "质量太差了&退货,电话<PHONE>"),
    ("ＯＫ　很好！", "OK 很好!"),
    ("物流慢\u200b\u200b  发到 zhang.wei@163.com", "物流慢 发到 <EMAIL>"),
    ("客服电话１３８１２３４５６７８", "客服电话<PHONE>"),
    ("这个酒店很好，服务也不错", "这个酒店很好,服务也不错"),
    ("很好", "很好"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_unigram_model(
        tmp_path_factory.mktemp("tiny") / "model", labels=LABELS, head_scale=1000.0
    )


@pytest.fixture(scope="module")
def classifier(tiny_dir: Path) -> TextClassifier:
    return TextClassifier.load(tiny_dir)


def test_pad_batch_pads_right_and_masks() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_length_sorted_batches_give_the_same_scores_in_input_order(
    classifier: TextClassifier,
) -> None:
    one_by_one = np.vstack([classifier.predict_proba([text]) for text in TEXTS])
    classifier.batch_size = 4  # batches of mixed lengths, padded
    try:
        batched = classifier.predict_proba(TEXTS)
    finally:
        classifier.batch_size = 32
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)


def test_proba_frame_columns_follow_label_order() -> None:
    proba = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    frame = proba_frame(proba, LABELS)
    assert list(frame.columns) == ["label", "score", "p_negative", "p_neutral", "p_positive"]
    assert frame["label"].tolist() == ["positive", "negative"]
    assert frame["score"].tolist() == [0.7, 0.5]
    assert frame["p_neutral"].tolist() == [0.2, 0.3]
    assert frame["label"].dtype == object and frame["p_positive"].dtype == np.float64
    empty = proba_frame(np.zeros((0, 3)), LABELS)
    assert list(empty.columns) == list(frame.columns) and empty.empty


def test_empty_input_gives_empty_output(classifier: TextClassifier) -> None:
    out = classifier.predict(pd.DataFrame({"text": pd.Series([], dtype=object)}))
    assert out.empty and "p_neutral" in out.columns


def test_input_without_text_column_or_with_non_strings_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'text' column.*'message'"):
        texts_of(pd.DataFrame({"message": ["a"]}))
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        texts_of(pd.DataFrame({"text": ["a", None]}))


def test_texts_longer_than_max_length_are_truncated(classifier: TextClassifier) -> None:
    long_text = "很好" * 500  # beyond the tiny model's 64 positions
    proba = classifier.predict_proba([long_text])
    assert proba.shape == (1, 3)


def test_saved_weights_are_fp16_and_load_as_fp32(
    classifier: TextClassifier, tmp_path: Path
) -> None:
    import torch
    from safetensors import safe_open

    save_classifier(classifier.model, classifier.tokenizer, tmp_path, max_length=16)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        dtypes = {weights.get_tensor(name).dtype for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {torch.float16}
    loaded = TextClassifier.load(tmp_path)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.max_length == 16
    assert loaded.labels == list(LABELS)
    # The training model stays fp32 and fp16 storage barely moves the scores.
    assert next(classifier.model.parameters()).dtype == torch.float32
    np.testing.assert_allclose(
        loaded.predict_proba(TEXTS[:3]), classifier.predict_proba(TEXTS[:3]), atol=1e-2
    )


def test_load_without_a_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        TextClassifier.load(tmp_path)


@pytest.fixture(scope="module")
def logged_model(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A pyfunc logged into a throwaway SQLite MLflow store: (model URI, var dir)."""
    import mlflow

    from pipelines.tracking import configure_mlflow

    root = tmp_path_factory.mktemp("mlflow")
    settings = Settings(var_dir=root / "var", data_dir=root / "data")
    configure_mlflow(settings)
    with mlflow.start_run():
        info = log_tiny_classifier(tiny_dir, LABELS)
    return info.model_uri, root / "var"


def test_logged_pyfunc_scores_with_the_documented_columns(
    logged_model: tuple[str, Path], classifier: TextClassifier
) -> None:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(logged_model[0])
    raw, prepared = (list(texts) for texts in zip(*RAW_AND_PREPARED, strict=True))
    out = model.predict(pd.DataFrame({"text": raw}))
    assert list(out.columns) == ["label", "score", "p_negative", "p_neutral", "p_positive"]
    proba = out[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(proba, classifier.predict_proba(prepared), atol=1e-6)
    assert out["score"].tolist() == proba.max(axis=1).tolist()
    assert set(out["label"]) <= set(LABELS)
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["text"]


def test_pyfunc_scores_raw_text_as_the_bare_model_scores_its_prepared_form(
    logged_model: tuple[str, Path], classifier: TextClassifier
) -> None:
    """Training/serving skew: the served model sees what training saw."""
    import mlflow.pyfunc

    from pipelines.data.prepare import clean_text

    raw, by_hand = (list(texts) for texts in zip(*RAW_AND_PREPARED, strict=True))
    prepared = [clean_text(text, min_chars=1, max_chars=512).text for text in raw]
    assert prepared == by_hand  # prepare's rows are what the hand-worked forms say
    bare_on_raw = classifier.predict_proba(raw)
    bare_on_prepared = classifier.predict_proba(by_hand)
    changed = [i for i, (a, b) in enumerate(zip(raw, by_hand, strict=True)) if a != b]
    # The tiny model does tell the forms apart, so this test would see a pyfunc scoring raw text.
    assert all(np.abs(bare_on_raw[i] - bare_on_prepared[i]).max() > 1e-4 for i in changed)
    served = mlflow.pyfunc.load_model(logged_model[0]).predict(pd.DataFrame({"text": raw}))
    np.testing.assert_allclose(
        served[["p_negative", "p_neutral", "p_positive"]].to_numpy(), bare_on_prepared, atol=1e-6
    )


def test_pyfunc_cuts_long_texts_at_prepares_max_chars(
    tiny_dir: Path, classifier: TextClassifier, logged_model: tuple[str, Path]
) -> None:
    import mlflow
    import mlflow.pyfunc

    text = "物流慢" * 4 + "电话13812345678"  # 12 characters, then a phone number
    with mlflow.start_run():
        info = log_tiny_classifier(tiny_dir, LABELS, max_chars=14)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": [text]}))
    # 14 characters would end inside "<PHONE>": the cut never leaves half a placeholder.
    expected = classifier.predict_proba(["物流慢物流慢物流慢物流慢电话"])
    np.testing.assert_allclose(
        served[["p_negative", "p_neutral", "p_positive"]].to_numpy(), expected, atol=1e-6
    )


def test_log_classifier_needs_the_text_package(tiny_dir: Path, tmp_path: Path) -> None:
    from pipelines.model.modeling import log_classifier

    with pytest.raises(ValueError, match="emoreg_textprep"):
        log_classifier(tiny_dir, LABELS, text_package=tmp_path, max_chars=512)


def test_logged_pyfunc_rejects_input_without_text(logged_model: tuple[str, Path]) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(logged_model[0])
    with pytest.raises(MlflowException, match="text"):
        model.predict(pd.DataFrame({"message": ["很好"]}))


def test_log_classifier_checks_the_labels(tiny_dir: Path, logged_model: tuple[str, Path]) -> None:
    import mlflow

    with mlflow.start_run(), pytest.raises(ValueError, match="differ"):
        log_tiny_classifier(tiny_dir, ["neg", "pos", "neutral"])


def test_logged_model_loads_without_this_repository(
    logged_model: tuple[str, Path], classifier: TextClassifier, tmp_path: Path
) -> None:
    """A fresh process where ``import pipelines`` fails still loads and scores the model."""
    model_uri, var_dir = logged_model
    result = run_without_repository(
        f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({f"sqlite:///{var_dir / 'mlflow.db'}"!r})
        raw = pd.DataFrame({{"text": ["客服电话１３８１２３４５６７８"]}})
        out = mlflow.pyfunc.load_model({model_uri!r}).predict(raw)
        print(json.dumps({{"columns": list(out.columns),
                          "proba": out[["p_negative", "p_neutral", "p_positive"]].values.tolist(),
                          "pipelines": any(m.startswith("pipelines") for m in sys.modules)}}))
        """,
        tmp_path,
    )
    proba = result.pop("proba")
    assert result == {
        "columns": ["label", "score", "p_negative", "p_neutral", "p_positive"],
        "pipelines": False,
    }
    # The shipped text pipeline ran there too: the phone number reached the model redacted.
    np.testing.assert_allclose(proba, classifier.predict_proba(["客服电话<PHONE>"]), atol=1e-6)
