"""ONNX export of a fine-tuned classifier and the choice of the served form: int8, mixed or fp32.

The torch weights (a ``save_pretrained`` folder) are exported to an ONNX graph (fp32, dynamic
batch and sequence axes) and quantised to int8 with ONNX Runtime's dynamic quantisation
(weights int8, activations quantised per batch at run time). Before quantisation the graph's
attention, layer norms and GELUs are fused into ONNX Runtime's transformer operators (about a
third off the batch-1 latency at the same labels: README, "Measured figures"). The forms are
scored on the validation split, cheapest first: int8 is served when it loses less than
``train.int8_max_accuracy_loss`` against the torch model there; otherwise ``onnx-int8-mixed``
(int8 but for the feed-forward output projections, kept fp32) under the same rule; otherwise
fp32 (which scores like torch, several times faster on CPU). The golden test set plays no part
in the choice.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.model.modeling import ONNX_INPUTS, OnnxClassifier, onnx_batch_size
from pipelines.params import Inference

log = logging.getLogger(__name__)

# The feed-forward output projection (intermediate -> hidden) of an encoder layer, as
# torch.onnx names the MatMul of a transformers BERT module path.
FFN_OUTPUT_MATMUL = re.compile(r"/layer\.\d+/output/dense/MatMul$")
OPSET = 17


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # onnx-int8, onnx-int8-mixed, onnx-fp32 or torch
    onnx_file: Path | None  # the graph the pyfunc scores with; None for torch
    reason: str
    val_accuracy: dict[str, float] = field(default_factory=dict)  # per form, when measured
    export_s: float = 0.0
    # The served form's validation scores (rows in order), when measured: the blend's input.
    val_proba: np.ndarray | None = field(default=None, repr=False, compare=False)


def export_onnx(model_dir: Path, output: Path) -> Path:
    """Export the folder's classifier to ``output`` (fp32 graph, logits out), fused."""
    raw = output.with_name(f"{output.stem}.unfused.onnx")
    _export_unfused(model_dir, raw)
    _fuse_transformer(raw, output, json.loads((model_dir / "config.json").read_text("utf-8")))
    raw.unlink()
    return output


def _export_unfused(model_dir: Path, output: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    # Eager attention traces to the MatMul/Softmax pattern that ONNX Runtime fuses into one
    # Attention operator; SDPA's traced graph matches no fusion pattern.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    # Any ids below the vocabulary size do; two rows of different lengths exercise the mask.
    input_ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (input_ids, mask),
            str(output),
            input_names=list(ONNX_INPUTS),
            output_names=["logits"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _fuse_transformer(source: Path, output: Path, config: dict[str, Any]) -> None:
    """Fuse ``source`` into ONNX Runtime's transformer operators, or copy it unfused.

    Offline and in Python only (``opt_level=0``): the saved graph holds no optimisation that is
    specific to this machine's CPU; the session still applies its own at load time.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = str(config.get("model_type", ""))
    if model_type != "bert":  # the only architecture whose fusion is measured here
        log.info("ONNX fusion skipped: model_type %r", model_type)
        shutil.copyfile(source, output)
        return
    fused = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=0,
    )
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    if not counts.get("Attention"):
        log.warning("ONNX fusion found no attention to fuse (%s): the graph stays unfused", counts)
        shutil.copyfile(source, output)
        return
    log.info("ONNX fusion: %s", counts)
    fused.save_model_to_file(str(output))


def quantize_int8(source: Path, output: Path, *, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 quantisation of ``source`` (weights int8, activations per batch).

    The nodes named in ``keep_fp32`` stay fp32 (see ``ffn_output_nodes``).

    Weights get one scale per output channel, not one per matrix: a few large columns of a
    matrix then no longer flatten the others to a handful of levels. On two fine-tuned e5-small
    versions (1,289 validation rows) per-tensor int8 changed validation accuracy by +0.47 and
    -0.39 points against fp32, per-channel by 0.00 and +0.08, at the same speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(output),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=list(keep_fp32),
        # ONNX's shape inference does not type the outputs of fused (com.microsoft) operators.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return output


def ffn_output_nodes(graph_file: Path) -> list[str]:
    """The names of the graph's feed-forward output projections, one per encoder layer.

    Their input is the GELU's output, whose long tail of large values one per-batch int8 scale
    flattens worst (Bondarenko et al., 2021, "Understanding and overcoming the challenges of
    efficient transformer quantization"). Measured on a served e5-small with six frozen layers
    (1,409 validation rows, AMX): int8 lost 0.92 points against torch; with these 12 MatMuls in
    fp32, 0.21 points, at 1.54x ONNX fp32's throughput (int8: 2.08x).
    """
    import onnx

    graph = onnx.load(str(graph_file)).graph
    matmuls = (node.name for node in graph.node if node.op_type == "MatMul")
    return [name for name in matmuls if FFN_OUTPUT_MATMUL.search(name)]


def accuracy(proba: np.ndarray, labels: Sequence[str], truth: Sequence[str]) -> float:
    if not len(truth):
        return float("nan")
    predicted = [labels[i] for i in proba.argmax(axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


def choose_runtime(
    model_dir: Path,
    validation: pd.DataFrame,
    torch_proba: np.ndarray,
    labels: Sequence[str],
    work: Path,
    *,
    inference: Inference,
    int8_max_accuracy_loss: float,
) -> RuntimeChoice:
    """Export, quantise, score the validation split and pick the served form.

    ``torch_proba`` is the torch model's scores of ``validation`` (rows in its order), the
    reference each ONNX form is measured against. ``auto`` tries int8, then the mixed form, then
    settles for fp32; a form that is not needed is not built.
    """
    if inference == "torch":
        return RuntimeChoice("torch", None, "train.inference is torch", val_proba=torch_proba)
    started = time.perf_counter()
    folder = work / "onnx"
    truth = list(validation["label"])
    texts = list(validation["text"])
    scores = {"torch": accuracy(torch_proba, labels, truth)}
    forms: dict[str, tuple[Path, np.ndarray]] = {}

    def measure(runtime: str, graph: Path) -> float:
        # Scored as served: int8 forms one text per call (see ROW_BY_ROW_RUNTIMES).
        batch_size = onnx_batch_size(runtime)
        proba = OnnxClassifier.load(model_dir, graph, batch_size=batch_size).predict_proba(texts)
        forms[runtime] = (graph, proba)
        scores[runtime] = accuracy(proba, labels, truth)
        return scores["torch"] - scores[runtime]

    def chosen(runtime: str, reason: str) -> RuntimeChoice:
        graph, proba = forms[runtime]
        elapsed = time.perf_counter() - started
        return RuntimeChoice(runtime, graph, reason, scores, elapsed, proba)

    fp32 = export_onnx(model_dir, folder / "model_fp32.onnx")
    measure("onnx-fp32", fp32)
    if len(texts):
        drift = float(np.abs(forms["onnx-fp32"][1] - torch_proba).max())
        log.info("ONNX fp32 vs torch on %d validation rows: max |dp| %.2e", len(texts), drift)
    if inference == "onnx-fp32":
        return chosen("onnx-fp32", "train.inference is onnx-fp32")
    allowed, reason = f"{100 * int8_max_accuracy_loss:.2f}", ""
    if inference != "onnx-int8-mixed":
        loss = measure("onnx-int8", quantize_int8(fp32, folder / "model_int8.onnx"))
        if inference == "onnx-int8":
            return chosen("onnx-int8", "train.inference is onnx-int8")
        if not texts:
            return chosen("onnx-fp32", "no validation rows to measure int8's loss on: fp32")
        if loss < int8_max_accuracy_loss:
            return chosen("onnx-int8", f"int8 loses {100 * loss:.2f} points < {allowed}")
        reason = f"int8 loses {100 * loss:.2f} points >= {allowed}"
    keep = ffn_output_nodes(fp32)
    if not keep:
        if inference == "onnx-int8-mixed":
            raise ValueError(f"{fp32} has no feed-forward output projections to keep fp32")
        return chosen("onnx-fp32", f"{reason}; no feed-forward output projections found: fp32")
    mixed = quantize_int8(fp32, folder / "model_int8_mixed.onnx", keep_fp32=keep)
    loss = measure("onnx-int8-mixed", mixed)
    if inference == "onnx-int8-mixed":
        return chosen("onnx-int8-mixed", "train.inference is onnx-int8-mixed")
    mixed_reason = f"{reason}; with its {len(keep)} feed-forward output projections in fp32"
    if loss < int8_max_accuracy_loss:
        return chosen("onnx-int8-mixed", f"{mixed_reason} {100 * loss:.2f} < {allowed}")
    return chosen("onnx-fp32", f"{mixed_reason} {100 * loss:.2f} >= {allowed}: fp32")


def served_validation_proba(choice: RuntimeChoice, torch_proba: np.ndarray) -> np.ndarray:
    """The validation scores of the served transformer form."""
    return torch_proba if choice.val_proba is None else choice.val_proba
