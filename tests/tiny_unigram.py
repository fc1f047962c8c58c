"""Tiny XLM-R-style models (SentencePiece Unigram tokenizer + BERT) for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEXTS = [
    "这个酒店很好，服务也不错",
    "质量太差了!!! 退货",
    "iPhone 15 屏幕 OK",
    "物流慢 Привет",
    "客服态度很好",
]
# Pieces no text uses and no keep rule covers: pruning must drop exactly these.
FOREIGN = ["абв", "ж", "ü", "▁über", "שלום", "ñandú"]


def tiny_unigram_vocab(texts: Sequence[str]) -> list[tuple[str, float]]:
    """An XLM-R-like vocabulary: specials first, <mask> last, CJK/ASCII/foreign pieces between."""
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -5.0) for c in chars] + [(f"▁{c}", -6.0) for c in chars]
    # Multi-character pieces; "很好" and "▁iPhone" appear in TEXTS, "不好", "▁ok" and "▁the"
    # do not (only the short ASCII one stays).
    vocab += [("很好", -3.0), ("退货", -3.0), ("不好", -3.0), ("▁iPhone", -4.0), ("▁the", -3.0)]
    vocab += [("▁ok", -3.0)]
    vocab += [(piece, -4.0) for piece in FOREIGN]
    return [*vocab, ("<mask>", 0.0)]


def build_tiny_unigram_model(
    output_dir: Path,
    texts: Sequence[str] = TEXTS,
    labels: Sequence[str] = ("a", "b", "c"),
    head_scale: float = 1.0,
) -> Path:
    """A tiny random BERT with an XLM-R Unigram tokenizer, saved like the converted e5-small.

    ``head_scale`` multiplies the classifier's weights: a random model's probabilities are
    nearly uniform, and a sharper head makes small input differences visible in its output.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer(vocab=tiny_unigram_vocab(texts))
    torch.manual_seed(0)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def log_tiny_classifier(model_dir: Path, labels: Sequence[str], max_chars: int = 512) -> Any:
    """``log_classifier`` in the active run, with the text pipeline exported beside the model."""
    import tempfile

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import log_classifier

    with tempfile.TemporaryDirectory(prefix="emoreg-code-") as tmp:
        package = export_package(Path(tmp))
        return log_classifier(model_dir, labels, text_package=package, max_chars=max_chars)
