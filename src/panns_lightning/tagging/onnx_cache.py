"""A torch model file's ONNX export, made on first use and kept in a cache.

The cache key is the SHA-256 of the model file's bytes (remembered per path, size, mtime and inode
in ``digests.json``, so an unchanged file is hashed once) plus everything else the export depends
on (the model name and labels given for a file without a card, this package's and torch's
versions, the ONNX opset), so an edited or replaced checkpoint never meets a stale graph. The
export is verified against PyTorch (:func:`panns_lightning.export.export_model`, dynamic time
axis) and written under a temporary name, then renamed: a reader sees a whole file or none, and
two processes exporting at once both end with a good one.

Where: ``--onnx-cache DIR``, else ``$PANNS_ONNX_CACHE``, else ``$XDG_CACHE_HOME/panns_lightning/onnx``
(``~/.cache/panns_lightning/onnx``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from panns_lightning.atomic import atomic_open

CACHE_ENV = "PANNS_ONNX_CACHE"
EXPORT_SECONDS = 4.0
"""Length of the example the export traces and verifies (the time axis stays dynamic)."""
_CHUNK = 8 * 1024 * 1024
MAX_REMEMBERED = 256

logger = logging.getLogger(__name__)


def cache_folder(given: Path | None = None) -> Path:
    """The cache folder: ``given``, else ``$PANNS_ONNX_CACHE``, else the user's cache folder."""
    if given is not None:
        return given
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "panns_lightning" / "onnx"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a 327 MB Cnn14 takes a fraction of a second)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remembered_digest(path: Path, folder: Path) -> str:
    """:func:`file_digest`, remembered in ``folder/digests.json`` by (real path, size, mtime, inode),
    so a model file read again unchanged is not hashed again (a Cnn14 costs about 0.3-0.5 s)."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo_path = folder / "digests.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    digest = memo.get(identity)
    if isinstance(digest, str) and len(digest) == 64:
        return digest
    digest = file_digest(path)
    memo = {key: value for key, value in list(memo.items())[-(MAX_REMEMBERED - 1) :]}
    memo[identity] = digest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(memo_path, "w", encoding="utf-8") as stream:
            json.dump(memo, stream)
    except OSError:
        pass  # a read-only cache still works; it only hashes every time
    return digest


def cache_key(checkpoint: Path, model_name: str | None, labels_csv: Path | None, folder: Path | None = None) -> str:
    from panns_lightning.export.graph import ONNX_OPSET

    try:
        from importlib.metadata import version

        package = version("panns-lightning")
    except Exception:  # not installed as a distribution (a source checkout on PYTHONPATH)
        package = "source"
    facts = {
        "checkpoint": remembered_digest(checkpoint, folder) if folder is not None else file_digest(checkpoint),
        "model": model_name,
        "labels": file_digest(labels_csv) if labels_csv is not None else None,
        "package": package,
        "torch": torch.__version__,
        "opset": ONNX_OPSET,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def cache_path(
    checkpoint: Path,
    *,
    model_name: str | None = None,
    labels_csv: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Where ``checkpoint``'s export is (or will be) cached."""
    folder = cache_folder(cache_dir)
    key = cache_key(checkpoint, model_name, labels_csv, folder)
    return folder / f"{checkpoint.stem[:48]}-{key[:24]}.onnx"


def cached_onnx(
    checkpoint: Path,
    *,
    model_name: str | None = None,
    labels_csv: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The ONNX export of ``checkpoint`` (exported and cached on first use)."""
    path = cache_path(checkpoint, model_name=model_name, labels_csv=labels_csv, cache_dir=cache_dir)
    if path.is_file():
        return path
    folder = path.parent
    from panns_lightning.export import export_model
    from panns_lightning.inference import load_model

    start = time.perf_counter()
    loaded = load_model(checkpoint, model_name=model_name, labels_csv=labels_csv)
    if loaded.network is None:
        raise ValueError(f"{checkpoint}: only a torch model file can be exported to ONNX")
    folder.mkdir(parents=True, exist_ok=True)
    export_model(
        loaded.network,
        path,
        "onnx",
        loaded.card.sample_rate,
        seconds=max(EXPORT_SECONDS, loaded.card.min_samples / loaded.card.sample_rate),
        dynamic_time=True,
        card=loaded.card,
    )
    logger.warning(
        "exported %s to ONNX once (%.0f s), cached as %s", checkpoint.name, time.perf_counter() - start, path
    )
    return path


def optimized_onnx(graph: Path) -> Path:
    """``graph`` with onnxruntime's graph optimisations applied and saved beside it (made once).

    Optimising Cnn14 takes seconds at every session start; a session over the saved result starts
    with optimisations off. Some optimisations (NCHWc layouts) are specific to the CPU, so the
    saved file's name carries onnxruntime's version and this CPU's model and flags.
    """
    import onnxruntime

    path = graph.with_name(f"{graph.stem}.opt-{_machine_key(onnxruntime.__version__)}.onnx")
    if path.is_file():
        return path
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(temporary)
    try:
        onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _machine_key(runtime_version: str) -> str:
    """What an optimised graph depends on besides the graph: the runtime and the CPU."""
    import platform

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            lines = [line for line in stream if line.startswith(("model name", "flags"))]
        cpu = "".join(sorted(set(lines)))
    except OSError:
        pass
    return hashlib.sha256(f"{runtime_version}|{platform.machine()}|{cpu}".encode()).hexdigest()[:12]
