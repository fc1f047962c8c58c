"""A tiny random BERT with a character WordPiece tokenizer, for tests that need a fast model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipelines.model.base_model import staging_dir

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
    with staging_dir(output_dir) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    return output_dir
