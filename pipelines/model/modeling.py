"""The classifier's storage format: a ``save_pretrained`` folder inside an MLflow pyfunc model.

This module is self-contained on purpose: ``log_classifier`` logs its own source as the model's
code ("models from code"), so a logged model loads and scores with ``mlflow.pyfunc.load_model``
in any environment holding the pinned libraries, without this repository and without pickle.
Keep it free of ``pipelines`` imports (a test loads a model in a clean process to check that).

Pyfunc I/O: a DataFrame with a ``text`` column in; ``label``, ``score`` (probability of the
label) and ``p_<label>`` per class (in the model's label order) out.

Text in = text trained on: the pyfunc passes every raw text through the platform's text pipeline
(normalisation, PII redaction, the ``max_chars`` cut of ``prepare``) before it scores. That code
travels with the model as the ``emoreg_textprep`` package (``code_paths``, a copy of
``pipelines/data/{textprep,text,pii}.py``), and ``max_chars`` as the model config, so a chat app's
raw text and a training row reach the classifier in one form. ``TextClassifier`` itself scores
texts as given (training and validation feed it prepared rows).

Runtime: a model logged with an ONNX file (``onnx_model`` artifact, exported and maybe int8
quantised by ``pipelines.model.onnx_export``) scores under ONNX Runtime (``OnnxClassifier``:
tokenizers + onnxruntime + numpy, no torch or transformers import); the ``hf_model`` folder then
still holds the torch weights, for warm starts and inspection, and the tokenizer. Without it the
torch weights score (``TextClassifier``). ``model_config["runtime"]`` says which one.

Blend: with an ``ngram_model`` artifact (``pipelines.model.ngram``) the transformer's
probabilities are combined with a character n-gram model's (``NgramClassifier``, numpy only) by
``model_config["blend_rule"]``: ``linear`` (``blend_weight`` x the transformer's + the rest x the
n-gram model's) or ``log_linear`` (a weighted geometric mean, sharpened by ``blend_sharpness``).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

HF_ARTIFACT = "hf_model"  # key of the save_pretrained folder among the pyfunc's artifacts
ONNX_ARTIFACT = "onnx_model"  # key of the ONNX file the pyfunc scores with, when there is one
ONNX_INPUTS = ("input_ids", "attention_mask")  # the exported graph's inputs, int64
# ONNX Runtime's intra-op threads; default: every core. A server running several model
# workers on one machine sets it lower so that they do not oversubscribe the cores.
ONNX_THREADS_ENV = "EMOREG_ONNX_THREADS"
# Whether idle intra-op threads spin before they sleep ("1") or sleep at once ("0", default).
# Spinning wakes them faster for the next operator (a third off batch-1 latency with 2 threads)
# but burns the cores they wait on: only for a model process with cores of its own.
ONNX_SPINNING_ENV = "EMOREG_ONNX_SPINNING"
NGRAM_ARTIFACT = "ngram_model"  # key of the character n-gram model's folder, when blended
NGRAM_CONFIG = "ngram.json"  # labels, n-gram range, casing, the vocabulary in column order
NGRAM_WEIGHTS = "ngram_weights.npz"  # idf, coef (labels x n-grams), intercept
TEXT_PACKAGE = "emoreg_textprep"  # the text pipeline shipped in the model's code_paths
DEFAULT_BATCH_SIZE = 32
# Dynamic int8 quantisation scales each activation tensor by its range over the whole batch, so
# in a batch a text's scores depend on the texts beside it (the int8 model of a learning-curve
# run on the golden split: shuffling the input moved 38 of 2,088 labels and one probability by
# 0.63). These forms score one text per session run, so that a message's emotion is its own;
# the texts of one call run side by side on one-thread sessions (``OnnxClassifier.load``).
ROW_BY_ROW_RUNTIMES = frozenset({"onnx-int8", "onnx-int8-mixed"})
BLEND_RULES = ("linear", "log_linear")  # how the n-gram model's probabilities join (see below)
# Appended to this module's source to make the logged model file (MLflow "models from code").
_CODE_FOOTER = "\n\nimport mlflow.models  # noqa: E402\n\nmlflow.models.set_model(make_pyfunc())\n"
_EXAMPLE_TEXTS = ["物流很快，客服态度也好", "东西坏了一直没人处理", "请问什么时候发货？"]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one: ``(input_ids, attention_mask)``."""
    import torch

    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the special tokens, truncated to ``max_length``."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in encoded["input_ids"]]


def predict_proba(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Class probabilities ``(len(texts), num_labels)``, rows in the order of ``texts``.

    Texts are scored sorted by length so that each batch pads to a similar width.
    """
    import torch

    num_labels = int(model.config.num_labels)
    proba = np.zeros((len(texts), num_labels), dtype=np.float64)
    if not texts:
        return proba
    ids = encode(tokenizer, texts, max_length)
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                input_ids, mask = pad_batch([ids[i] for i in rows], tokenizer.pad_token_id)
                logits = model(input_ids=input_ids, attention_mask=mask).logits
                proba[rows] = torch.softmax(logits.float(), dim=-1).numpy()
    finally:
        model.train(was_training)
    return proba


def proba_frame(proba: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """The pyfunc output columns from a probability matrix."""
    best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
    # One constructor call: adding columns one by one cost 0.6 ms a request, a third of the
    # served model's own overhead at batch 1.
    columns: dict[str, Any] = {
        "label": pd.Series(np.array(labels, dtype=object)[best], dtype=object),
        "score": proba[np.arange(len(proba)), best] if len(proba) else np.zeros(0),
    }
    columns.update({f"p_{label}": proba[:, index] for index, label in enumerate(labels)})
    return pd.DataFrame(columns)


def texts_of(model_input: Any) -> list[str]:
    """The ``text`` column of a pyfunc input as strings; a clear error for anything else."""
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(model_input)
    if "text" not in model_input.columns:
        raise ValueError(
            f"model input needs a 'text' column; got columns {list(model_input.columns)}"
        )
    column = model_input["text"]
    bad = [i for i, value in enumerate(column) if not isinstance(value, str)]
    if bad:
        raise ValueError(f"'text' must be a string in every row; rows {bad[:10]} are not")
    return list(column)


def model_labels(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(int(model.config.num_labels))]


@dataclass
class TextClassifier:
    """A fine-tuned sequence classifier and its tokenizer, loaded from a save_pretrained folder."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def load(cls, model_dir: str | Path, batch_size: int = DEFAULT_BATCH_SIZE) -> TextClassifier:
        """Load offline; fp16 weights on disk are cast to fp32, which is faster on CPU."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model (config.json) in {model_dir}")
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, local_files_only=True, dtype=torch.float32
        )
        model.eval()
        return cls(
            model, tokenizer, model_labels(model), max_length_of(model, tokenizer), batch_size
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return predict_proba(self.model, self.tokenizer, texts, self.max_length, self.batch_size)

    def predict(self, model_input: Any) -> pd.DataFrame:
        return proba_frame(self.predict_proba(texts_of(model_input)), self.labels)


def _config_labels(model_dir: Path) -> list[str]:
    """Label names from a transformers ``config.json`` (no transformers import)."""
    import json

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): str(v) for k, v in config["id2label"].items()}
    return [id2label[i] for i in range(len(id2label))]


def onnx_threads() -> int:
    import os

    value = os.environ.get(ONNX_THREADS_ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ONNX_THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def onnx_spinning() -> bool:
    import os

    value = os.environ.get(ONNX_SPINNING_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{ONNX_SPINNING_ENV} must be 0 or 1 (true/false, yes/no), got {value!r}")


@dataclass
class OnnxClassifier:
    """The same classifier exported to ONNX, scored by ONNX Runtime.

    Tokenises with the folder's ``tokenizer.json`` (the fast tokenizer transformers saved:
    special tokens and truncation as ``TextClassifier`` applies them) and pads with numpy.
    """

    session: Any
    tokenizer: Any  # tokenizers.Tokenizer, truncating at max_length
    pad_id: int
    labels: list[str]
    max_length: int
    batch_size: int = DEFAULT_BATCH_SIZE
    # With one text per run: a one-thread session that ``row_workers`` threads share to score
    # the rows of a many-text call side by side (None: rows one after another).
    row_session: Any = None
    row_workers: int = 1

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        onnx_file: str | Path,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        spinning: bool | None = None,
        parallel_rows: bool = True,
    ) -> OnnxClassifier:
        """The session runs ``threads`` intra-op threads (default ``onnx_threads()``).

        With ``batch_size`` 1 and ``parallel_rows``, a call with several texts spreads its rows
        over ``threads`` workers that share a second, one-thread session: one text per run
        leaves most of a thread pool idle (short matrices), and rows side by side scored the
        golden split 1.4-1.6x as fast as rows in turn on 2 cores (README, "Inference speed"). A
        row's scores stay what it scores alone.
        """
        import json

        from tokenizers import Tokenizer

        model_dir, onnx_file = Path(model_dir), Path(onnx_file)
        for needed in (model_dir / "config.json", model_dir / "tokenizer.json", onnx_file):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} not found: not an exported classifier")
        tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text("utf-8"))
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        limit = int(config.get("max_position_embeddings", 512))
        max_length = max(2, min(int(tokenizer_config.get("model_max_length") or limit), limit))
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        pad_token = tokenizer_config.get("pad_token")
        pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        threads = threads or onnx_threads()
        # Idle pool threads sleep instead of spinning unless asked: a served model shares the
        # cores with the regulation service, and spinning doubled its CPU per message there.
        spin = onnx_spinning() if spinning is None else spinning
        session = _onnx_session(onnx_file, threads, spin)
        names = [node.name for node in session.get_inputs()]
        if names != list(ONNX_INPUTS):
            raise ValueError(f"{onnx_file} takes inputs {names}, expected {list(ONNX_INPUTS)}")
        side_by_side = batch_size == 1 and parallel_rows and threads > 1
        return cls(
            session,
            tokenizer,
            int(pad_id if pad_id is not None else config.get("pad_token_id") or 0),
            _config_labels(model_dir),
            max_length,
            batch_size,
            row_session=_onnx_session(onnx_file, 1, False) if side_by_side else None,
            row_workers=threads if side_by_side else 1,
        )

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(list(texts))] if texts else []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        proba = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return proba
        ids = self.encode(texts)
        order = np.argsort([len(seq) for seq in ids], kind="stable")
        if self.row_session is None or len(texts) == 1:
            self._score(self.session, ids, order, proba)
            return proba
        from concurrent.futures import ThreadPoolExecutor

        # Round robin over the length-sorted rows: each worker gets a like share of the work.
        # Workers write disjoint rows of ``proba``; ONNX Runtime runs without the GIL.
        shares = [order[worker :: self.row_workers] for worker in range(self.row_workers)]
        with ThreadPoolExecutor(self.row_workers, thread_name_prefix="onnx-rows") as pool:
            runs = [pool.submit(self._score, self.row_session, ids, s, proba) for s in shares]
            for run in runs:
                run.result()
        return proba

    def _score(
        self, session: Any, ids: list[list[int]], order: np.ndarray, proba: np.ndarray
    ) -> None:
        """Score the rows ``order`` of ``ids`` into ``proba``, ``batch_size`` per run."""
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, index in enumerate(rows):
                input_ids[row, : len(ids[index])] = ids[index]
                mask[row, : len(ids[index])] = 1
            (logits,) = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})
            proba[rows] = _softmax(logits.astype(np.float64))

    def predict(self, model_input: Any) -> pd.DataFrame:
        return proba_frame(self.predict_proba(texts_of(model_input)), self.labels)


def _onnx_session(onnx_file: Path, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# scikit-learn's char analyzer collapses runs of whitespace to one space before the n-grams
_RUNS_OF_WHITESPACE = re.compile(r"\s\s+")


@dataclass
class NgramClassifier:
    """TF-IDF of character n-grams + multinomial logistic regression, with numpy alone.

    Scores exactly as the scikit-learn pipeline it was exported from
    (``pipelines.model.ngram``): ``TfidfVectorizer(analyzer="char", sublinear_tf=True)``'s
    n-grams, counts, ``1 + log(tf)``, idf, l2 norm, then softmax of the linear scores.
    """

    index: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray  # (labels, n-grams)
    intercept: np.ndarray
    labels: list[str]
    ngram_range: tuple[int, int]
    lowercase: bool = True
    sublinear_tf: bool = True

    @classmethod
    def load(cls, folder: str | Path) -> NgramClassifier:
        import json

        folder = Path(folder)
        config = json.loads((folder / NGRAM_CONFIG).read_text(encoding="utf-8"))
        with np.load(folder / NGRAM_WEIGHTS) as weights:
            idf, coef, intercept = weights["idf"], weights["coef"], weights["intercept"]
        vocabulary = config["vocabulary"]
        if not (len(vocabulary) == len(idf) == coef.shape[1]):
            raise ValueError(f"{folder}: vocabulary, idf and weights differ in size")
        low, high = config["ngram_range"]
        return cls(
            {gram: i for i, gram in enumerate(vocabulary)},
            idf.astype(np.float64),
            coef.astype(np.float64),
            intercept.astype(np.float64),
            list(config["labels"]),
            (int(low), int(high)),
            bool(config["lowercase"]),
            bool(config["sublinear_tf"]),
        )

    def ngrams(self, text: str) -> list[str]:
        text = _RUNS_OF_WHITESPACE.sub(" ", text.lower() if self.lowercase else text)
        low, high = self.ngram_range
        return [
            text[i : i + n] for n in range(low, min(high, len(text)) + 1)
            for i in range(len(text) - n + 1)
        ]  # fmt: skip

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        logits = np.tile(self.intercept, (len(texts), 1))
        for row, text in enumerate(texts):
            counts: dict[int, int] = {}
            for gram in self.ngrams(text):
                column = self.index.get(gram)
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
            if not counts:
                continue
            columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (1.0 + np.log(tf) if self.sublinear_tf else tf) * self.idf[columns]
            values /= np.sqrt(values @ values)
            logits[row] += self.coef[:, columns] @ values
        return _softmax(logits)


@dataclass
class BlendedClassifier:
    """The transformer's and the n-gram model's probabilities combined by ``rule``.

    ``linear``: ``weight`` x the transformer's + (1 - ``weight``) x the n-gram model's.
    ``log_linear``: proportional to (transformer ** ``weight`` x n-gram ** (1 - ``weight``)) **
    ``sharpness``: a row both models lean to wins more clearly, one they split on stays split.
    """

    transformer: Any  # TextClassifier or OnnxClassifier
    ngram: NgramClassifier
    weight: float
    rule: str = "linear"
    sharpness: float = 1.0

    @property
    def labels(self) -> list[str]:
        return list(self.transformer.labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        transformer = self.transformer.predict_proba(texts)
        if not len(texts):
            return transformer
        ngram = self.ngram.predict_proba(texts)
        return blend_proba(transformer, ngram, self.weight, self.rule, self.sharpness)

    def predict(self, model_input: Any) -> pd.DataFrame:
        return proba_frame(self.predict_proba(texts_of(model_input)), self.labels)


def blend_proba(
    transformer: np.ndarray, ngram: np.ndarray, weight: float, rule: str, sharpness: float
) -> np.ndarray:
    """The two models' probabilities combined by ``rule`` (``BlendedClassifier``)."""
    if rule == "log_linear":
        return log_linear_blend(transformer, ngram, weight, sharpness)
    return weight * transformer + (1 - weight) * ngram


def log_linear_blend(
    transformer: np.ndarray, ngram: np.ndarray, weight: float, sharpness: float
) -> np.ndarray:
    """Rows proportional to (transformer ** weight x ngram ** (1 - weight)) ** sharpness."""
    logits = weight * np.log(np.clip(transformer, 1e-12, None))
    logits += (1 - weight) * np.log(np.clip(ngram, 1e-12, None))
    return _softmax(sharpness * logits)


def check_blend(weight: float, rule: str, sharpness: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend_weight must be within [0, 1], got {weight}")
    if rule not in BLEND_RULES:
        raise ValueError(f"blend_rule must be one of {BLEND_RULES}, got {rule!r}")
    if not sharpness > 0:
        raise ValueError(f"blend_sharpness must be positive, got {sharpness}")


def onnx_batch_size(runtime: str | None) -> int:
    """Texts per ONNX Runtime call for the served form ``runtime``: one for the dynamically
    quantised forms (``ROW_BY_ROW_RUNTIMES``), length-sorted batches for fp32."""
    return 1 if runtime in ROW_BY_ROW_RUNTIMES else DEFAULT_BATCH_SIZE


def load_scorer(
    model_dir: str | Path,
    onnx_file: str | Path | None,
    ngram_folder: str | Path | None = None,
    blend_weight: float = 1.0,
    blend_rule: str = "linear",
    blend_sharpness: float = 1.0,
    *,
    runtime: str | None = None,
) -> TextClassifier | OnnxClassifier | BlendedClassifier:
    """The ONNX Runtime classifier when there is an ONNX file, else the torch one; blended with
    the n-gram model when there is one. ``runtime`` (the model config's) sets how many texts go
    into one ONNX Runtime call (``onnx_batch_size``)."""
    transformer = (
        OnnxClassifier.load(model_dir, onnx_file, batch_size=onnx_batch_size(runtime))
        if onnx_file is not None
        else TextClassifier.load(model_dir)
    )
    if ngram_folder is None:
        return transformer
    ngram = NgramClassifier.load(ngram_folder)
    if ngram.labels != transformer.labels:
        raise ValueError(f"n-gram labels {ngram.labels} differ from {transformer.labels}")
    check_blend(blend_weight, blend_rule, blend_sharpness)
    return BlendedClassifier(transformer, ngram, blend_weight, blend_rule, blend_sharpness)


def max_length_of(model: Any, tokenizer: Any) -> int:
    """The saved tokenizer's ``model_max_length``, capped by the model's position embeddings."""
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    saved = int(getattr(tokenizer, "model_max_length", limit) or limit)
    return max(2, min(saved, limit))


def make_pyfunc() -> Any:
    """An instance of the pyfunc wrapper (defined lazily: importing this module stays light)."""
    from mlflow.pyfunc import PythonModel

    class EmotionClassifier(PythonModel):
        """Pyfunc over ``OnnxClassifier`` (or ``TextClassifier`` for a torch-only model).

        Raw texts go through the shipped text pipeline first (see the module docstring).
        """

        def load_context(self, context: Any) -> None:
            import importlib

            self.classifier = load_scorer(
                context.artifacts[HF_ARTIFACT],
                context.artifacts.get(ONNX_ARTIFACT),
                context.artifacts.get(NGRAM_ARTIFACT),
                float(context.model_config.get("blend_weight", 1.0)),
                # versions logged before the log-linear rule blend linearly
                str(context.model_config.get("blend_rule", "linear")),
                float(context.model_config.get("blend_sharpness", 1.0)),
                runtime=context.model_config.get("runtime"),
            )
            self.prepare_text = importlib.import_module(TEXT_PACKAGE).prepare_text
            self.max_chars = int(context.model_config["max_chars"])

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            texts = [self.prepare_text(text, self.max_chars).text for text in texts_of(model_input)]
            return proba_frame(self.classifier.predict_proba(texts), self.classifier.labels)

    return EmotionClassifier()


def save_classifier(model: Any, tokenizer: Any, output_dir: Path, max_length: int) -> Path:
    """``save_pretrained`` with fp16 weights (half the size) and the scoring ``max_length``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    half = {name: tensor.detach().half() for name, tensor in model.state_dict().items()}
    model.save_pretrained(output_dir, state_dict=half)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output_dir)
    return output_dir


def pip_requirements() -> list[str]:
    """Exact pins of what loading needs; explicit so MLflow adds nothing (such as torchvision)."""
    from importlib.metadata import version

    pins = []
    packages = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas")
    for package in (*packages, "onnxruntime"):
        pins.append(f"{package}=={version(package).split('+')[0]}")
    pins.append(f"numpy=={version('numpy')}")
    return pins


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def log_classifier(
    model_dir: Path,
    labels: Sequence[str],
    *,
    text_package: Path,
    max_chars: int,
    onnx_file: Path | None = None,
    runtime: str = "torch",
    ngram_folder: Path | None = None,
    blend_weight: float = 1.0,
    blend_rule: str = "linear",
    blend_sharpness: float = 1.0,
    name: str = "model",
    example_texts: Sequence[str] = _EXAMPLE_TEXTS,
) -> ModelInfo:
    """Log ``model_dir`` (a save_pretrained folder) as a pyfunc model in the active run.

    ``text_package`` is the ``emoreg_textprep`` folder (``pipelines.data.textprep.export_package``)
    and ``max_chars`` prepare's cut: the pyfunc applies both to raw texts before scoring. With
    ``onnx_file`` (the exported graph of the same weights) the pyfunc scores under ONNX Runtime;
    ``runtime`` names the form (``onnx-int8``, ``onnx-int8-mixed``, ``onnx-fp32``, ``torch``) in
    the model config.
    With ``ngram_folder`` (``pipelines.model.ngram``) the output blends the transformer's and the
    n-gram model's probabilities by ``blend_rule`` (``BlendedClassifier``).
    Checks that the model's labels are ``labels`` and that it scores the example before logging.
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    started = time.perf_counter()
    if ngram_folder is None and blend_weight != 1.0:
        raise ValueError(f"blend_weight {blend_weight} needs an n-gram model")
    check_blend(blend_weight, blend_rule, blend_sharpness)
    classifier = load_scorer(
        model_dir,
        onnx_file,
        ngram_folder,
        blend_weight,
        blend_rule,
        blend_sharpness,
        runtime=runtime,
    )
    load_s = time.perf_counter() - started
    if classifier.labels != list(labels):
        raise ValueError(f"model labels {classifier.labels} differ from {list(labels)}")
    if text_package.name != TEXT_PACKAGE or not (text_package / "__init__.py").is_file():
        raise ValueError(f"{text_package} is not an {TEXT_PACKAGE} package folder")
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if (onnx_file is None) != (runtime == "torch"):
        raise ValueError(f"runtime {runtime!r} does not fit onnx_file={onnx_file}")
    artifacts = {HF_ARTIFACT: str(model_dir)}
    if onnx_file is not None:
        artifacts[ONNX_ARTIFACT] = str(onnx_file)
    if ngram_folder is not None:
        artifacts[NGRAM_ARTIFACT] = str(ngram_folder)
    example = pd.DataFrame({"text": list(example_texts)})
    signature = infer_signature(example, classifier.predict(example))
    with tempfile.TemporaryDirectory(prefix="emoreg-pyfunc-") as tmp:
        code_file = Path(tmp) / "emotion_classifier.py"
        code_file.write_text(Path(__file__).read_text(encoding="utf-8") + _CODE_FOOTER, "utf-8")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code_file),
            artifacts=artifacts,
            code_paths=[str(text_package)],
            model_config={
                "max_chars": max_chars,
                "runtime": runtime,
                "blend_weight": blend_weight,
                "blend_rule": blend_rule,
                "blend_sharpness": blend_sharpness,
            },
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    size = folder_size(model_dir) + (onnx_file.stat().st_size if onnx_file else 0)
    size += folder_size(ngram_folder) if ngram_folder else 0
    log.info(
        "logged %s (%s, %s blend, transformer weight %.2f, sharpness %.1f): %.1f MB of weights "
        "and tokenizer, loads in %.2f s",
        name,
        runtime,
        blend_rule,
        blend_weight,
        blend_sharpness,
        size / 1e6,
        load_s,
    )
    return info


def copy_transformers_folder(model_uri: str, output_dir: Path) -> Path:
    """Download the save_pretrained folder of a logged classifier (warm start, inspection)."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="emoreg-download-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = [
            p.parent
            for p in local.rglob("config.json")
            if (p.parent / "tokenizer_config.json").is_file()
        ]
        if not found:
            raise FileNotFoundError(f"no transformers folder inside {model_uri}")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.copytree(found[0], output_dir)
    return output_dir
