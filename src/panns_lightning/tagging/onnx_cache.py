"""A torch model file's ONNX export, made on first use and kept in a cache.

The cache key is the SHA-256 of the model file's bytes plus everything else the export depends
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

CACHE_ENV = "PANNS_ONNX_CACHE"
EXPORT_SECONDS = 4.0
"""Length of the example the export traces and verifies (the time axis stays dynamic)."""
_CHUNK = 8 * 1024 * 1024

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


def cache_key(checkpoint: Path, model_name: str | None, labels_csv: Path | None) -> str:
    from panns_lightning.export.graph import ONNX_OPSET

    try:
        from importlib.metadata import version

        package = version("panns-lightning")
    except Exception:  # not installed as a distribution (a source checkout on PYTHONPATH)
        package = "source"
    facts = {
        "checkpoint": file_digest(checkpoint),
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
    key = cache_key(checkpoint, model_name, labels_csv)
    return cache_folder(cache_dir) / f"{checkpoint.stem[:48]}-{key[:24]}.onnx"


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
