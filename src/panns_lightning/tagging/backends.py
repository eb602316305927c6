"""Which engine runs the network: PyTorch eager (fp32 or bf16 autocast) or ONNX Runtime.

On this project's reference CPU (2 cores, AVX-512) ONNX Runtime ran Cnn14 faster than eager
PyTorch with the same outputs (docs/speed.md has the figures), so ``auto`` picks it on the CPU
when it is installed (the ``fast`` extra) and PyTorch elsewhere. A torch model file is exported
to ONNX once (:mod:`.onnx_cache`) and the cached file is used from then on; an ``.onnx`` file is
run as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from panns_lightning.inference import AudioTagger
from panns_lightning.models.card import CARD_KEY, ModelCard
from panns_lightning.models.reader import LoadedModel, file_kind
from panns_lightning.models.runtimes import runnable_graph

from .onnx_cache import cache_path, cached_onnx, optimized_onnx

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("32", "bf16")
FAST_EXTRA = "pip install 'panns-lightning[fast]'"
AUTO_EXPORT_MIN_FILES = 64
"""Files from which ``auto`` exports a torch file to ONNX on first use (an export of Cnn14 costs
tens of seconds; ONNX Runtime saves a fraction of a second per 10 s clip on the reference CPU)."""


class BackendError(RuntimeError):
    """A backend that cannot run here (not installed, wrong device, wrong file kind)."""


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str, checkpoint: Path, *, files: int = 1, cached: bool = False) -> str:
    """The backend to use. ``auto``: ``onnxruntime`` for an .onnx file, and on the CPU when it is
    installed and the export is already cached or the run has at least :data:`AUTO_EXPORT_MIN_FILES`
    files (the one-off export repays itself); else ``torch``."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = file_kind(checkpoint)
    if backend == "auto":
        if kind == "onnx":
            return "onnxruntime"
        if kind == "torchscript" or torch.device(device).type != "cpu":
            return "torch"
        if not onnxruntime_available():
            logger.warning("onnxruntime is not installed, so the model runs on PyTorch (%s is faster)", FAST_EXTRA)
            return "torch"
        return "onnxruntime" if cached or files >= AUTO_EXPORT_MIN_FILES else "torch"
    if backend == "onnxruntime":
        if not onnxruntime_available():
            raise BackendError(f"--backend onnxruntime needs onnxruntime: {FAST_EXTRA}")
        if torch.device(device).type != "cpu":
            raise BackendError("--backend onnxruntime runs on the CPU here; use --backend torch with --device cuda")
        if kind == "torchscript":
            raise BackendError(f"{checkpoint} is a TorchScript file; it runs with --backend torch")
    elif kind == "onnx":
        raise BackendError(f"{checkpoint} is an ONNX file; it runs with --backend onnxruntime (or auto)")
    return backend


def open_tagger(
    checkpoint: Path,
    *,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "32",
    model_name: str | None = None,
    labels_csv: Path | None = None,
    window_seconds: float | None = None,
    batch_size: int | None = None,
    onnx_cache: Path | None = None,
    threads: int | None = None,
    files: int = 1,
) -> AudioTagger:
    """An :class:`AudioTagger` over ``checkpoint`` whose windows run on the chosen backend
    (``files``: how many the run will tag, for ``auto``; ``batch_size`` None: :func:`default_batch_size`)."""
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cached = False
    if backend == "auto" and file_kind(checkpoint) == "torch" and torch.device(device).type == "cpu":
        cached = cache_path(checkpoint, model_name=model_name, labels_csv=labels_csv, cache_dir=onnx_cache).is_file()
    chosen = resolve_backend(backend, device, checkpoint, files=files, cached=cached)
    batch_size = batch_size or default_batch_size(device, chosen)
    if chosen == "onnxruntime":
        if precision != "32":
            raise BackendError("--precision bf16 is a PyTorch autocast option; use it with --backend torch")
        if file_kind(checkpoint) == "onnx":
            graph, loaded = checkpoint, onnx_model(checkpoint, threads)
        else:
            graph = cached_onnx(checkpoint, model_name=model_name, labels_csv=labels_csv, cache_dir=onnx_cache)
            model_name = labels_csv = None  # the exported card already holds them
            import onnxruntime

            # Optimised once and saved in the cache: later sessions start seconds sooner.
            loaded = onnx_model(optimized_onnx(graph), threads, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
        return AudioTagger(
            graph,
            model_name=model_name,
            labels_csv=labels_csv,
            window_seconds=window_seconds,
            batch_size=batch_size,
            loaded=loaded,
        )
    tagger = AudioTagger(
        checkpoint,
        model_name=model_name,
        labels_csv=labels_csv,
        device=device,
        window_seconds=window_seconds,
        batch_size=batch_size,
    )
    if precision == "bf16":
        tagger.loaded = autocast_model(tagger.loaded, tagger.device)
    return tagger


def onnx_model(path: Path, threads: int | None = None, level: Any = None) -> LoadedModel:
    """An ONNX file as a :class:`LoadedModel`: graph optimisation ``level`` (default all),
    ``threads`` intra-op threads (default: onnxruntime's, one per physical core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # No memory arena: activations are freed after each run. Cnn14 at 8 x 10 s peaked 1428 MiB with
    # the arena against 1219 without, at the same speed (docs/speed.md).
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL if level is None else level
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    text = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    if not text:
        raise BackendError(f"{path}: this ONNX file has no model card; export it again with panns-export")
    card = ModelCard.from_json(text, str(path))
    runner, fixed = runnable_graph("onnx", card, session, path, "cpu")
    return LoadedModel(card, runner, None, path, "onnx", "card", fixed)


def autocast_model(loaded: LoadedModel, device: torch.device) -> LoadedModel:
    """``loaded`` whose forward runs under bf16 autocast (outputs are cast back to float32 by the tagger).

    Worth it only where the device computes bf16 natively (CPUs with AVX-512 BF16 or AMX, recent
    GPUs); docs/speed.md gives its top-k agreement with fp32.
    """
    runner = loaded.runner

    def run(waveform: torch.Tensor) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return runner(waveform)

    return dataclasses.replace(loaded, runner=run)


def default_batch_size(device: str, backend: str) -> int:
    """Windows per forward pass: 32 on a GPU; on the CPU 8 for PyTorch (1.85x faster per clip than
    1) and 4 for ONNX Runtime (as fast per clip as 8, with 160 MiB less memory; docs/speed.md)."""
    if torch.device(device).type == "cuda":
        return 32
    return 4 if backend == "onnxruntime" else 8
