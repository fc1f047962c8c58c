"""The ONNX form of the classifier: export, int8 quantisation, the choice, the logged pyfunc."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from pipelines.model import onnx_export
from pipelines.model.modeling import (
    OnnxClassifier,
    TextClassifier,
    load_scorer,
    onnx_spinning,
    onnx_threads,
)
from pipelines.model.onnx_export import (
    choose_runtime,
    export_onnx,
    ffn_output_nodes,
    quantize_int8,
)
from pipelines.settings import Settings
from tests.clean_process import run_without_repository
from tests.tiny_unigram import build_tiny_unigram_model

LABELS = ("negative", "neutral", "positive")
# Mixed lengths (batches pad), a text beyond the tiny model's 64 positions (truncation), Latin
# and Cyrillic pieces, a character outside the vocabulary.
TEXTS = [
    "很好",
    "质量太差了!!! 退货",
    "iPhone 15 屏幕 OK",
    "物流慢 Привет",
    "这个酒店很好，服务也不错",
    "客服态度很好" * 30,
    "龘",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fitted for a few steps to tell TEXTS apart (a random one says the same
    label for every text, which would hide label flips)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = build_tiny_unigram_model(tmp_path_factory.mktemp("tiny") / "model", labels=LABELS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    batch = tokenizer(TEXTS, truncation=True, max_length=64, padding=True, return_tensors="pt")
    targets = torch.tensor([i % 3 for i in range(len(TEXTS))])
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        optimiser.zero_grad()
        model(**batch, labels=targets).loss.backward()
        optimiser.step()
    model.eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(tiny_dir, out / "fp32.onnx")
    return fp32, quantize_int8(fp32, out / "int8.onnx")


@pytest.fixture(scope="module")
def torch_classifier(tiny_dir: Path) -> TextClassifier:
    return TextClassifier.load(tiny_dir)


def test_onnx_tokenisation_is_the_transformers_tokenizers(
    tiny_dir: Path, exported: tuple[Path, Path], torch_classifier: TextClassifier
) -> None:
    from pipelines.model.modeling import encode

    onnx = OnnxClassifier.load(tiny_dir, exported[0])
    expected = encode(torch_classifier.tokenizer, TEXTS, torch_classifier.max_length)
    assert onnx.encode(TEXTS) == expected
    assert max(len(ids) for ids in expected) == 64  # the long text was cut at 64 positions
    assert onnx.pad_id == torch_classifier.tokenizer.pad_token_id == 1  # XLM-R's <pad>
    assert onnx.labels == list(LABELS) and onnx.max_length == torch_classifier.max_length


def test_onnx_fp32_scores_as_torch(
    tiny_dir: Path, exported: tuple[Path, Path], torch_classifier: TextClassifier
) -> None:
    onnx = OnnxClassifier.load(tiny_dir, exported[0], batch_size=3)  # padded, mixed batches
    reference = torch_classifier.predict_proba(TEXTS)
    proba = onnx.predict_proba(TEXTS)
    assert reference.argmax(axis=1).tolist()[:5] == [0, 1, 2, 0, 1]  # it learned TEXTS' labels
    np.testing.assert_allclose(proba, reference, atol=1e-5)
    one_by_one = np.vstack([onnx.predict_proba([text]) for text in TEXTS])
    np.testing.assert_allclose(proba, one_by_one, atol=1e-5)


def test_onnx_int8_is_smaller_and_close_to_torch(
    tiny_dir: Path, exported: tuple[Path, Path], torch_classifier: TextClassifier
) -> None:
    import onnx

    int8_file = exported[1]
    graph = onnx.load(str(int8_file))
    weights = {init.name: list(init.dims) for init in graph.graph.initializer}
    integer_matmuls = [node for node in graph.graph.node if node.op_type == "MatMulInteger"]
    assert integer_matmuls
    for node in integer_matmuls:  # per-channel: one weight zero point per output column
        weight_dims, zero_point_dims = weights[node.input[1]], weights[node.input[3]]
        assert len(weight_dims) == 2 and zero_point_dims == [weight_dims[1]], node.name
    reference = torch_classifier.predict_proba(TEXTS)
    proba = OnnxClassifier.load(tiny_dir, int8_file).predict_proba(TEXTS)
    assert proba.argmax(axis=1).tolist() == reference.argmax(axis=1).tolist()
    np.testing.assert_allclose(proba, reference, atol=0.05)
    assert not np.allclose(proba, reference, atol=1e-6)  # it is really another model


def test_int8_scores_of_a_text_do_not_depend_on_the_texts_beside_it(
    tiny_dir: Path, exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOREG_ONNX_THREADS", "2")  # served rows go to two workers side by side
    int8_file = exported[1]
    batched = OnnxClassifier.load(tiny_dir, int8_file, batch_size=len(TEXTS))
    alone = np.vstack([batched.predict_proba([text]) for text in TEXTS])
    # Why: one batch shares its activations' quantisation scale, so batched scores move.
    assert not np.allclose(batched.predict_proba(TEXTS), alone, rtol=0, atol=1e-6)

    for runtime in ("onnx-int8", "onnx-int8-mixed"):
        served = load_scorer(tiny_dir, int8_file, runtime=runtime)
        assert isinstance(served, OnnxClassifier) and served.batch_size == 1
        np.testing.assert_array_equal(served.predict_proba(TEXTS), alone)
        backwards = served.predict_proba(TEXTS[::-1])[::-1]
        np.testing.assert_array_equal(backwards, alone)
    fp32 = load_scorer(tiny_dir, exported[0], runtime="onnx-fp32")
    assert isinstance(fp32, OnnxClassifier) and fp32.batch_size == 32  # exact enough batched
    assert fp32.row_session is None


class RecordingSession:
    """An ONNX Runtime session that notes the thread and the rows of each run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[tuple[str, int]] = []

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import threading

        self.runs.append((threading.current_thread().name, len(feed["input_ids"])))
        return self.session.run(outputs, feed)  # type: ignore[no-any-return]


def test_one_text_per_run_spreads_the_rows_over_one_thread_sessions(
    tiny_dir: Path, exported: tuple[Path, Path]
) -> None:
    int8_file = exported[1]
    served = OnnxClassifier.load(tiny_dir, int8_file, batch_size=1, threads=2)
    assert served.row_workers == 2
    assert served.session.get_session_options().intra_op_num_threads == 2
    assert served.row_session.get_session_options().intra_op_num_threads == 1
    alone = np.vstack([served.predict_proba([text]) for text in TEXTS])
    served.session = RecordingSession(served.session)
    served.row_session = RecordingSession(served.row_session)
    np.testing.assert_array_equal(served.predict_proba(TEXTS), alone)
    # Every row once, one per run, on the worker threads; the pool session saw none of them.
    assert [rows for _, rows in served.row_session.runs] == [1] * len(TEXTS)
    assert {name.split("_")[0] for name, _ in served.row_session.runs} == {"onnx-rows"}
    assert served.session.runs == []
    served.predict_proba(TEXTS[:1])  # a single text runs on the pool session: its latency
    assert served.session.runs == [("MainThread", 1)]

    # One thread, or asked not to: rows in turn on the one session.
    for in_turn in (
        OnnxClassifier.load(tiny_dir, int8_file, batch_size=1, threads=1),
        OnnxClassifier.load(tiny_dir, int8_file, batch_size=1, threads=2, parallel_rows=False),
        OnnxClassifier.load(tiny_dir, int8_file, batch_size=32, threads=2),  # batches
    ):
        assert in_turn.row_session is None and in_turn.row_workers == 1


def test_exported_graph_is_fused_into_transformer_operators(exported: tuple[Path, Path]) -> None:
    import onnx

    fp32, int8 = (onnx.load(str(path)) for path in exported)
    fp32_ops = [node.op_type for node in fp32.graph.node]
    # The tiny model has 2 layers: one fused attention each, two skip layer norms each.
    assert fp32_ops.count("Attention") == 2 and fp32_ops.count("SkipLayerNormalization") == 4
    assert fp32_ops.count("EmbedLayerNormalization") == 1
    assert "Softmax" not in fp32_ops  # the unfused attention's softmax is gone
    int8_ops = [node.op_type for node in int8.graph.node]
    assert int8_ops.count("QAttention") == 2 and "Attention" not in int8_ops
    assert not list(exported[0].parent.glob("*unfused*"))  # the intermediate graph is removed


def test_mixed_int8_keeps_the_feed_forward_output_projections_fp32(
    tiny_dir: Path, exported: tuple[Path, Path], tmp_path: Path, torch_classifier: TextClassifier
) -> None:
    import onnx

    fp32, int8 = exported
    keep = ffn_output_nodes(fp32)
    # The tiny BERT has 2 layers, each with one intermediate -> hidden projection.
    assert keep == [
        "/bert/encoder/layer.0/output/dense/MatMul",
        "/bert/encoder/layer.1/output/dense/MatMul",
    ]
    mixed = quantize_int8(fp32, tmp_path / "mixed.onnx", keep_fp32=keep)

    def float_matmuls(path: Path) -> set[str]:
        graph = onnx.load(str(path)).graph
        floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
        return {n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in floats}

    assert set(keep) <= float_matmuls(fp32)
    assert float_matmuls(mixed) == set(keep)  # every other projection is int8
    assert not float_matmuls(int8) & set(keep)
    assert fp32.stat().st_size > mixed.stat().st_size > int8.stat().st_size
    reference = torch_classifier.predict_proba(TEXTS)
    proba = OnnxClassifier.load(tiny_dir, mixed).predict_proba(TEXTS)
    assert proba.argmax(axis=1).tolist() == reference.argmax(axis=1).tolist()
    np.testing.assert_allclose(proba, reference, atol=0.05)


def test_no_feed_forward_projection_in_another_graph(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/head/dense/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert ffn_output_nodes(path) == []


def test_fusion_is_skipped_for_an_unmeasured_architecture(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    from pipelines.model.onnx_export import _fuse_transformer

    copy = tmp_path / "copy.onnx"
    _fuse_transformer(exported[0], copy, {"model_type": "xlm-roberta"})
    assert copy.read_bytes() == exported[0].read_bytes()


def test_empty_input_and_missing_files(tiny_dir: Path, exported: tuple[Path, Path]) -> None:
    onnx = OnnxClassifier.load(tiny_dir, exported[0])
    assert onnx.predict_proba([]).shape == (0, 3)
    with pytest.raises(FileNotFoundError, match=r"nothing\.onnx"):
        OnnxClassifier.load(tiny_dir, tiny_dir / "nothing.onnx")


def test_session_threads_follow_the_setting_and_spin_only_when_asked(
    tiny_dir: Path, exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOREG_ONNX_THREADS", "1")
    monkeypatch.delenv("EMOREG_ONNX_SPINNING", raising=False)
    options = OnnxClassifier.load(tiny_dir, exported[1]).session.get_session_options()
    assert options.intra_op_num_threads == 1
    # Spinning pool threads burn a core that the service beside the model needs: off by default.
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setenv("EMOREG_ONNX_SPINNING", "true")
    spinning = OnnxClassifier.load(tiny_dir, exported[1], threads=2).session.get_session_options()
    assert spinning.intra_op_num_threads == 2
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    # The argument wins over the environment.
    asked = OnnxClassifier.load(tiny_dir, exported[1], spinning=False).session.get_session_options()
    assert asked.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_thread_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOREG_ONNX_THREADS", "3")
    assert onnx_threads() == 3
    monkeypatch.setenv("EMOREG_ONNX_THREADS", "zero")
    with pytest.raises(ValueError, match="EMOREG_ONNX_THREADS"):
        onnx_threads()


@pytest.mark.parametrize(
    ("value", "expected"), [("", False), ("0", False), ("No", False), ("1", True), ("yes", True)]
)
def test_spinning_setting_is_parsed(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOREG_ONNX_SPINNING", value)
    assert onnx_spinning() is expected


def test_spinning_setting_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOREG_ONNX_SPINNING", "sometimes")
    with pytest.raises(ValueError, match="EMOREG_ONNX_SPINNING must be 0 or 1"):
        onnx_spinning()


def _validation(truth: str) -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, "label": [truth] * len(TEXTS)})


def _neutral_and_perfect() -> tuple[pd.DataFrame, np.ndarray]:
    """TEXTS all labelled neutral, and a "torch model" right on every one of them."""
    return _validation("neutral"), np.tile([0.0, 1.0, 0.0], (len(TEXTS), 1))


def test_choice_takes_int8_only_within_the_allowed_loss(tiny_dir: Path, tmp_path: Path) -> None:
    # Hand-made reference: a "torch model" that is right on every row (accuracy 1.0), while the
    # tiny random model says neutral on only some rows, so int8 loses more than 0.5 points.
    validation, perfect = _neutral_and_perfect()
    strict = choose_runtime(
        tiny_dir, validation, perfect, LABELS, tmp_path / "a",
        inference="auto", int8_max_accuracy_loss=0.005,
    )  # fmt: skip
    assert strict.val_accuracy["torch"] == 1.0
    assert strict.val_accuracy["onnx-int8"] < 0.995
    assert strict.val_accuracy["onnx-int8-mixed"] < 0.995  # the second rung fails too
    assert strict.runtime == "onnx-fp32" and strict.onnx_file is not None
    assert strict.onnx_file.name == "model_fp32.onnx" and "fp32" in strict.reason
    lenient = choose_runtime(
        tiny_dir, validation, perfect, LABELS, tmp_path / "b",
        inference="auto", int8_max_accuracy_loss=1.0,
    )  # fmt: skip
    assert lenient.runtime == "onnx-int8" and lenient.onnx_file is not None
    assert lenient.onnx_file.name == "model_int8.onnx"


class _FixedScores:
    """Scores a graph with a hand-made table of probabilities, by the graph's file name."""

    table: ClassVar[dict[str, np.ndarray]] = {}

    def __init__(self, graph: Path) -> None:
        self.graph = graph

    @classmethod
    def load(cls, model_dir: Path, graph: Path, batch_size: int) -> _FixedScores:
        # Measured as served: int8 forms one text per call, fp32 in batches.
        assert batch_size == (32 if graph.name == "model_fp32.onnx" else 1), graph.name
        return cls(graph)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.table[self.graph.name]


def _rows(right: int, wrong: int) -> np.ndarray:
    """Probabilities for ``right + wrong`` rows whose truth is neutral."""
    return np.array([[0.1, 0.8, 0.1]] * right + [[0.8, 0.1, 0.1]] * wrong)


@pytest.mark.parametrize(
    ("int8_wrong", "mixed_wrong", "expected", "built"),
    [
        (0, 1, "onnx-int8", {"model_fp32.onnx", "model_int8.onnx"}),
        (1, 0, "onnx-int8-mixed", {"model_fp32.onnx", "model_int8.onnx", "model_int8_mixed.onnx"}),
        (2, 1, "onnx-fp32", {"model_fp32.onnx", "model_int8.onnx", "model_int8_mixed.onnx"}),
    ],
)
def test_auto_tries_int8_then_mixed_then_fp32(
    int8_wrong: int,
    mixed_wrong: int,
    expected: str,
    built: set[str],
    tiny_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20 neutral rows; torch and fp32 right on all of them. One wrong row costs 5 points: over
    # the allowed 4, so a form with a wrong row is not served.
    monkeypatch.setattr(onnx_export, "OnnxClassifier", _FixedScores)
    monkeypatch.setattr(
        _FixedScores,
        "table",
        {
            "model_fp32.onnx": _rows(20, 0),
            "model_int8.onnx": _rows(20 - int8_wrong, int8_wrong),
            "model_int8_mixed.onnx": _rows(20 - mixed_wrong, mixed_wrong),
        },
    )
    validation = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["neutral"] * 20})
    choice = choose_runtime(
        tiny_dir, validation, _rows(20, 0), LABELS, tmp_path,
        inference="auto", int8_max_accuracy_loss=0.04,
    )  # fmt: skip
    assert choice.runtime == expected
    assert choice.onnx_file is not None and choice.onnx_file.parent == tmp_path / "onnx"
    assert {p.name for p in (tmp_path / "onnx").glob("*.onnx")} == built
    assert choice.val_accuracy["onnx-int8"] == 1 - int8_wrong / 20
    if "model_int8_mixed.onnx" in built:
        assert choice.val_accuracy["onnx-int8-mixed"] == 1 - mixed_wrong / 20
        assert "2 feed-forward output projections in fp32" in choice.reason
    assert choice.val_proba is not None
    np.testing.assert_array_equal(choice.val_proba, _FixedScores.table[choice.onnx_file.name])


def test_mixed_form_can_be_forced(tiny_dir: Path, tmp_path: Path) -> None:
    validation, reference = _neutral_and_perfect()
    choice = choose_runtime(
        tiny_dir, validation, reference, LABELS, tmp_path,
        inference="onnx-int8-mixed", int8_max_accuracy_loss=0.0,
    )  # fmt: skip
    assert choice.runtime == "onnx-int8-mixed" and choice.onnx_file is not None
    assert choice.onnx_file.name == "model_int8_mixed.onnx"
    assert set(choice.val_accuracy) == {"torch", "onnx-fp32", "onnx-int8-mixed"}  # int8 not built
    assert not (tmp_path / "onnx" / "model_int8.onnx").exists()


def test_graph_without_feed_forward_projections_falls_back_to_fp32(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "ffn_output_nodes", lambda graph: [])
    validation, perfect = _neutral_and_perfect()
    choice = choose_runtime(
        tiny_dir, validation, perfect, LABELS, tmp_path / "a",
        inference="auto", int8_max_accuracy_loss=0.005,
    )  # fmt: skip
    assert choice.runtime == "onnx-fp32" and "no feed-forward output projections" in choice.reason
    assert "onnx-int8-mixed" not in choice.val_accuracy
    with pytest.raises(ValueError, match="no feed-forward output projections to keep fp32"):
        choose_runtime(
            tiny_dir, validation, perfect, LABELS, tmp_path / "b",
            inference="onnx-int8-mixed", int8_max_accuracy_loss=0.005,
        )  # fmt: skip


def test_choice_without_validation_rows_or_when_forced(tiny_dir: Path, tmp_path: Path) -> None:
    empty = pd.DataFrame({"text": [], "label": []})
    none = np.zeros((0, 3))
    choice = choose_runtime(
        tiny_dir, empty, none, LABELS, tmp_path / "a", inference="auto", int8_max_accuracy_loss=1
    )
    assert choice.runtime == "onnx-fp32" and "no validation rows" in choice.reason
    forced = choose_runtime(
        tiny_dir, empty, none, LABELS, tmp_path / "b", inference="torch", int8_max_accuracy_loss=1
    )
    assert forced.runtime == "torch" and forced.onnx_file is None


@pytest.fixture(scope="module")
def onnx_pyfunc(
    tiny_dir: Path, exported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    import tempfile

    import mlflow

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import log_classifier
    from pipelines.model.ngram import export_ngram, fit_ngram
    from pipelines.tracking import configure_mlflow

    root = tmp_path_factory.mktemp("mlflow")
    configure_mlflow(Settings(var_dir=root / "var", data_dir=root / "data"))
    # The served model as train logs it: int8 graph, blended with an n-gram model.
    cyclic = [LABELS[i % 3] for i in range(len(TEXTS))]
    ngram, order = fit_ngram(TEXTS, cyclic, LABELS, max_n=2, min_df=1, c=1.0)
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        info = log_classifier(
            tiny_dir,
            LABELS,
            text_package=export_package(Path(tmp) / "code"),
            max_chars=512,
            onnx_file=exported[1],
            runtime="onnx-int8",
            ngram_folder=export_ngram(ngram, order, LABELS, Path(tmp) / "ngram"),
            blend_weight=0.7,
        )
    return info.model_uri, root / "var"


def test_runtime_must_fit_the_onnx_file(
    tiny_dir: Path, onnx_pyfunc: tuple[str, Path], tmp_path: Path
) -> None:
    import mlflow

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import log_classifier

    package = export_package(tmp_path)
    with mlflow.start_run(), pytest.raises(ValueError, match="does not fit"):
        log_classifier(tiny_dir, LABELS, text_package=package, max_chars=512, runtime="onnx-int8")


def test_onnx_pyfunc_loads_without_this_repository_or_torch(
    onnx_pyfunc: tuple[str, Path],
    tiny_dir: Path,
    exported: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """A fresh process where ``import pipelines`` fails scores with ONNX Runtime, never torch."""
    model_uri, var_dir = onnx_pyfunc
    result = run_without_repository(
        f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({f"sqlite:///{var_dir / 'mlflow.db'}"!r})
        model = mlflow.pyfunc.load_model({model_uri!r})
        out = model.predict(pd.DataFrame({{"text": {TEXTS!r}}}))
        print(json.dumps({{"columns": list(out.columns), "labels": out["label"].tolist(),
                          "proba": out[["p_negative", "p_neutral", "p_positive"]].values.tolist(),
                          "runtime": model.model_config["runtime"],
                          "torch": "torch" in sys.modules,
                          "pipelines": any(m.startswith("pipelines") for m in sys.modules)}}))
        """,
        tmp_path,
    )
    proba = np.array(result.pop("proba"))
    labels = result.pop("labels")
    assert result == {
        "columns": ["label", "score", "p_negative", "p_neutral", "p_positive"],
        "runtime": "onnx-int8",
        "torch": False,
        "pipelines": False,
    }
    # The int8 graph scored there (not the torch weights beside it), one text per call (batched
    # int8 scores differ by up to 3e-4 here), on the prepared texts, blended 0.7 / 0.3 with the
    # n-gram model (whose numpy scorer test_ngram checks against scikit-learn).
    from pipelines.data.textprep import prepare_text
    from pipelines.model.modeling import NgramClassifier

    prepared = [prepare_text(text, 512).text for text in TEXTS]
    assert prepared[4] == "这个酒店很好,服务也不错"  # NFKC: the full-width comma
    int8 = OnnxClassifier.load(tiny_dir, exported[1], batch_size=1).predict_proba(prepared)
    artifacts = Path(var_dir).parent  # the n-gram folder as logged, read back from the store
    ngram_dir = next(artifacts.rglob("ngram.json")).parent
    expected = 0.7 * int8 + 0.3 * NgramClassifier.load(ngram_dir).predict_proba(prepared)
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert not np.allclose(proba, int8, atol=1e-3)  # the n-gram share is really there
    assert labels == [LABELS[i] for i in expected.argmax(axis=1)]


def test_onnx_pyfunc_keeps_the_torch_weights_for_warm_starts(
    onnx_pyfunc: tuple[str, Path], torch_classifier: TextClassifier, tmp_path: Path
) -> None:
    from pipelines.model.modeling import copy_transformers_folder

    folder = copy_transformers_folder(onnx_pyfunc[0], tmp_path / "warm")
    assert (folder / "model.safetensors").is_file()
    warm = TextClassifier.load(folder)
    np.testing.assert_allclose(
        warm.predict_proba(TEXTS), torch_classifier.predict_proba(TEXTS), atol=1e-6
    )
