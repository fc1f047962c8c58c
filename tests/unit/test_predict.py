"""``predict`` CLI on CSV files against a temporary registry (champion and challenger)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.settings import Settings, get_settings
from tests.tiny_unigram import build_tiny_unigram_model, log_tiny_classifier

LABELS = ("negative", "neutral", "positive")
P_COLUMNS = ["p_negative", "p_neutral", "p_positive"]


def _challenger_dir(champion_dir: Path, output_dir: Path) -> Path:
    """The champion with its head biased to 'positive': a model that predicts differently."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(champion_dir)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 10.0]))
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(champion_dir).save_pretrained(output_dir)
    return output_dir


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings (via environment, as the CLI reads them) with champion v1 and challenger v2."""
    import mlflow

    from pipelines.tracking import configure_mlflow

    root = tmp_path_factory.mktemp("registry")
    champion_dir = build_tiny_unigram_model(root / "champion", labels=LABELS)
    challenger_dir = _challenger_dir(champion_dir, root / "challenger")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMOREG_VAR_DIR", str(root / "var"))
        patch.setenv("EMOREG_DATA_DIR", str(root / "data"))
        for name in ("DATABASE_URL", "MODELS_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACTS_DIR"):
            patch.delenv(f"EMOREG_{name}", raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        configure_mlflow(settings)
        client = mlflow.MlflowClient()
        client.create_registered_model(settings.registered_model_name)
        for alias, model_dir in (("champion", champion_dir), ("challenger", challenger_dir)):
            with mlflow.start_run() as run:
                info = log_tiny_classifier(model_dir, LABELS)
            version = client.create_model_version(
                settings.registered_model_name, info.model_uri, run_id=run.info.run_id
            )
            client.set_registered_model_alias(
                settings.registered_model_name, alias, version.version
            )
        yield settings
    get_settings.cache_clear()


def write_csv(path: Path, rows: dict[str, list[str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def texts_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "in.csv",
        {
            "id": ["007", "008", "009"],
            "text": ["物流很快，谢谢", "质量太差了!!! 退货", "iPhone 15 屏幕 OK"],
            "note": ["", "x", "y"],
        },
    )


def read_out(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "note": str}, keep_default_na=False)


def test_predict_scores_with_the_champion_by_default(
    registry: Settings, texts_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "out.csv"
    assert main(["predict", "--input", str(texts_csv), "--output", str(out_path)]) == 0
    out = read_out(out_path)
    assert list(out.columns) == ["id", "text", "note", "label", "score", *P_COLUMNS]
    assert out["id"].tolist() == ["007", "008", "009"]  # kept as written, order kept
    assert out["note"].tolist() == ["", "x", "y"]
    np.testing.assert_allclose(out[P_COLUMNS].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["score"], out[P_COLUMNS].max(axis=1), atol=1e-9)
    assert "3 rows scored with models:/emotion-classifier@champion" in capsys.readouterr().out


def test_alias_shortcut_picks_the_challenger(
    registry: Settings, texts_csv: Path, tmp_path: Path
) -> None:
    out_path = tmp_path / "out.csv"
    args = ["predict", "--input", str(texts_csv), "--output", str(out_path)]
    assert main([*args, "--alias", "challenger"]) == 0
    challenger = read_out(out_path)
    assert challenger["label"].tolist() == ["positive"] * 3
    assert main([*args, "--model-uri", "models:/emotion-classifier/1"]) == 0
    champion = read_out(out_path)
    assert (champion["p_positive"] < challenger["p_positive"]).all()


def test_small_batches_give_the_same_output(
    registry: Settings, texts_csv: Path, tmp_path: Path
) -> None:
    args = ["predict", "--input", str(texts_csv)]
    assert main([*args, "--output", str(tmp_path / "a.csv")]) == 0
    assert main([*args, "--output", str(tmp_path / "b.csv"), "--batch-rows", "2"]) == 0
    pd.testing.assert_frame_equal(read_out(tmp_path / "a.csv"), read_out(tmp_path / "b.csv"))


def test_existing_prediction_columns_are_replaced(registry: Settings, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", {"text": ["很好"], "label": ["old"], "score": ["9"]})
    assert main(["predict", "--input", str(path), "--output", str(path)]) == 0
    out = pd.read_csv(path)
    assert list(out.columns) == ["text", "label", "score", *P_COLUMNS]
    assert out["label"].iloc[0] in LABELS


def test_missing_text_column_is_rejected_and_nothing_written(
    registry: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "in.csv", {"message": ["很好"]})
    out_path = tmp_path / "out.csv"
    assert main(["predict", "--input", str(path), "--output", str(out_path)]) == 2
    assert "no 'text' column" in capsys.readouterr().err
    assert not out_path.exists()


def test_blank_texts_reject_the_file_naming_the_rows(
    registry: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "in.csv", {"text": ["很好", "", "差", "   "]})
    out_path = tmp_path / "out.csv"
    out_path.write_text("previous results\n", encoding="utf-8")
    assert main(["predict", "--input", str(path), "--output", str(out_path)]) == 2
    err = capsys.readouterr().err
    assert "2 rows have an empty text (data rows 2, 4" in err
    assert out_path.read_text(encoding="utf-8") == "previous results\n"  # untouched


def test_unknown_alias_is_a_clear_error(
    registry: Settings, texts_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "out.csv"
    args = ["predict", "--input", str(texts_csv), "--output", str(out_path), "--alias", "nope"]
    assert main(args) == 2
    assert "cannot load the model models:/emotion-classifier@nope" in capsys.readouterr().err
    assert not out_path.exists()


def test_missing_input_file(registry: Settings, tmp_path: Path) -> None:
    args = ["predict", "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o.csv")]
    assert main(args) == 2


def test_alias_and_model_uri_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--input", "a", "--output", "b", "--alias", "x", "--model-uri", "y"])


def test_header_only_file_gives_header_only_output(registry: Settings, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\n", encoding="utf-8")
    out_path = tmp_path / "out.csv"
    assert main(["predict", "--input", str(path), "--output", str(out_path)]) == 0
    assert out_path.read_text(encoding="utf-8").strip() == ",".join(
        ["id", "text", "label", "score", *P_COLUMNS]
    )


def test_empty_file_is_a_clear_error(
    registry: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("", encoding="utf-8")
    assert main(["predict", "--input", str(path), "--output", str(tmp_path / "o.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
