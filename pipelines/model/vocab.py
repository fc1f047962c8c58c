"""Vocabulary pruning: keep the pieces Chinese customer-service texts need, drop the rest.

XLM-R's SentencePiece (Unigram) vocabulary has 250,002 pieces; its embedding matrix is about 80%
of e5-small's parameters. Kept: every special token, every piece containing a CJK character,
every piece of at most two printable ASCII characters (besides the ``▁`` word-start mark), and
every piece seen when tokenising the given texts: about 23,000 pieces, 118M -> 31M parameters.

Unigram segmentation is the best-scoring path over the vocabulary; removing pieces that lie on
no chosen path cannot change the path of those texts, so their tokenisation is unchanged
(``prune_vocabulary`` verifies it). Other texts still tokenise: Chinese exactly as before (all
CJK pieces stay), other words in smaller pieces, unknown scripts as ``<unk>``.

Other tokenizer models (the tiny WordPiece test model) are left as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORD_START = "▁"  # SentencePiece's mark for a piece that starts a word
# XLM-R holds 83,000 ASCII-only pieces (English and other Latin-script words). Kept: those of at
# most 2 characters (2,761: letters, digits, punctuation and their pairs), so any ASCII text
# still tokenises without <unk>; longer ones only when the texts use them.
ASCII_MAX_CHARS = 2
# Unified ideographs (and extensions A to H), compatibility ideographs, CJK symbols and
# punctuation, full-width forms.
_CJK_RANGES = (
    (0x3000, 0x303F),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
    (0x20000, 0x3134F),
)


@dataclass(frozen=True)
class PruneReport:
    pruned: bool
    vocab_before: int
    vocab_after: int
    params_before: int
    params_after: int
    reason: str = ""

    def summary(self) -> str:
        if not self.pruned:
            return f"vocabulary kept ({self.vocab_before} pieces): {self.reason}"
        return (
            f"vocabulary {self.vocab_before} -> {self.vocab_after} pieces, "
            f"parameters {self.params_before / 1e6:.1f}M -> {self.params_after / 1e6:.1f}M"
        )


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def is_general_piece(piece: str) -> bool:
    """Pieces kept whatever the texts: any with a CJK character, or short printable ASCII."""
    if any(is_cjk(char) for char in piece):
        return True
    body = piece.replace(WORD_START, "")
    return len(body) <= ASCII_MAX_CHARS and all(" " < char < "\x7f" for char in body)


def pieces_to_keep(pieces: Sequence[str], always: Iterable[int], seen: Iterable[int]) -> list[int]:
    """Old ids to keep, ascending (so special tokens at the start keep their ids)."""
    keep = set(always) | set(seen)
    keep.update(i for i, piece in enumerate(pieces) if is_general_piece(piece))
    return sorted(i for i in keep if 0 <= i < len(pieces))


def _remap_ids(node: Any, new_id: dict[int, int]) -> Any:
    """Rewrite the token ids inside a post-processor's JSON (template or Roberta/Bert style)."""
    if isinstance(node, list):
        return [_remap_ids(item, new_id) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            out[key] = [new_id[int(i)] for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
            out[key] = [value[0], new_id[int(value[1])]]
        else:
            out[key] = _remap_ids(value, new_id)
    return out


def prune_tokenizer_json(tokenizer_json: dict[str, Any], keep: Sequence[int]) -> dict[str, Any]:
    """A Unigram ``tokenizer.json`` restricted to the ``keep`` ids, renumbered in order."""
    model = tokenizer_json["model"]
    if model.get("type") != "Unigram":
        raise ValueError(f"not a Unigram tokenizer: {model.get('type')!r}")
    new_id = {old: new for new, old in enumerate(keep)}
    missing = [
        t["content"] for t in tokenizer_json.get("added_tokens", []) if t["id"] not in new_id
    ]
    if missing:
        raise ValueError(f"special tokens {missing} would be pruned")
    pruned = dict(tokenizer_json)
    pruned["model"] = dict(model, vocab=[model["vocab"][i] for i in keep])
    if model.get("unk_id") is not None:
        pruned["model"]["unk_id"] = new_id[int(model["unk_id"])]
    pruned["added_tokens"] = [
        dict(token, id=new_id[token["id"]]) for token in tokenizer_json.get("added_tokens", [])
    ]
    if tokenizer_json.get("post_processor") is not None:
        pruned["post_processor"] = _remap_ids(tokenizer_json["post_processor"], new_id)
    return pruned


def _remap_tokenizer_config(config: dict[str, Any], new_id: dict[int, int]) -> dict[str, Any]:
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        return config
    return dict(config, added_tokens_decoder={str(new_id[int(k)]): v for k, v in decoder.items()})


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _slice_embeddings(model: Any, keep: Sequence[int], new_id: dict[int, int]) -> None:
    import torch

    old = model.get_input_embeddings()
    pad = model.config.pad_token_id
    new_pad = new_id.get(pad) if pad is not None else None
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(list(keep), dtype=torch.long)])
    new.weight.requires_grad_(old.weight.requires_grad)
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    for attribute in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
        value = getattr(model.config, attribute, None)
        if isinstance(value, int) and value in new_id:
            setattr(model.config, attribute, new_id[value])


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Piece ids of each text (no special tokens)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def token_pieces(tokenizer: Any, texts: Sequence[str]) -> list[list[str]]:
    """How each text splits into pieces (no special tokens)."""
    return [tokenizer.convert_ids_to_tokens(ids) for ids in token_ids(tokenizer, texts)]


def prune_vocabulary(
    model: Any, tokenizer: Any, texts: Sequence[str], work_dir: Path
) -> tuple[Any, Any, PruneReport]:
    """Prune a Unigram tokenizer and the model's word embeddings to the pieces needed.

    The pruned tokenizer is written to ``work_dir`` (reloaded from there); the model is changed
    in place. Raises ``RuntimeError`` if any text would tokenise differently afterwards.
    """
    from transformers import AutoTokenizer

    params_before = count_parameters(model)
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(work_dir)
    json_path = work_dir / "tokenizer.json"
    vocab_before = len(tokenizer)
    if not json_path.is_file():
        reason = "the tokenizer has no tokenizer.json"
        return (
            model,
            tokenizer,
            PruneReport(False, vocab_before, vocab_before, params_before, params_before, reason),
        )
    tokenizer_json = json.loads(json_path.read_text(encoding="utf-8"))
    kind = tokenizer_json.get("model", {}).get("type")
    if kind != "Unigram":
        reason = f"{kind} tokenizer, only Unigram vocabularies are pruned"
        return (
            model,
            tokenizer,
            PruneReport(False, vocab_before, vocab_before, params_before, params_before, reason),
        )
    pieces = [entry[0] for entry in tokenizer_json["model"]["vocab"]]
    rows = model.get_input_embeddings().num_embeddings
    # More rows than pieces happens (e5-small: 250,037 rows for 250,002 pieces, padded for
    # speed); those extra rows are never looked up and go. Fewer rows means a mismatched pair.
    if rows < len(pieces):
        raise ValueError(
            f"the model has {rows} embedding rows for {len(pieces)} vocabulary pieces: "
            "tokenizer and model do not belong together"
        )
    encoded = token_ids(tokenizer, texts)
    before = [tokenizer.convert_ids_to_tokens(ids) for ids in encoded]
    seen = {i for ids in encoded for i in ids}
    always = {token["id"] for token in tokenizer_json.get("added_tokens", [])}
    always.update(i for i in tokenizer.all_special_ids if i is not None)
    keep = pieces_to_keep(pieces, always, seen)
    new_id = {old: new for new, old in enumerate(keep)}

    json_path.write_text(
        json.dumps(prune_tokenizer_json(tokenizer_json, keep), ensure_ascii=False), "utf-8"
    )
    config_path = work_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config_path.write_text(
            json.dumps(_remap_tokenizer_config(config, new_id), ensure_ascii=False, indent=2),
            "utf-8",
        )
    pruned_tokenizer = AutoTokenizer.from_pretrained(work_dir, local_files_only=True)
    _check_same_pieces(before, token_pieces(pruned_tokenizer, texts), texts)
    _slice_embeddings(model, keep, new_id)
    report = PruneReport(
        True, vocab_before, len(pruned_tokenizer), params_before, count_parameters(model)
    )
    log.info("%s", report.summary())
    return model, pruned_tokenizer, report


def _check_same_pieces(
    before: list[list[str]], after: list[list[str]], texts: Sequence[str]
) -> None:
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    if changed:
        first = changed[0]
        raise RuntimeError(
            f"vocabulary pruning changed the tokenisation of {len(changed)} texts, first "
            f"{texts[first]!r}: {before[first]} -> {after[first]}"
        )
