"""Fixtures shared by the test files that run training (helpers live in train_fixtures.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from train_fixtures import BIN, DDP_ENV, ddp_overrides, make_tiny_audioset, run

REFERENCE_PACKAGE = "_panns_inference_reference"


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """panns-tag's ONNX cache (``$PANNS_ONNX_CACHE``) in this session's temp folder, never the user's
    ~/.cache: a test must not leave files in a home folder, nor find an export an earlier run left."""
    os.environ["PANNS_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="session")
def tiny_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 16 kHz synthetic AudioSet converted to shards with the real CLI (made once per session)."""
    return make_tiny_audioset(tmp_path_factory.mktemp("tiny_audioset"))


@pytest.fixture(scope="session")
def ddp_reference(tiny_audioset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-process gloo run Lightning's own launcher starts (``trainer=ddp``): what the torchrun, SLURM
    and dry-run tests compare with. Its run dir is ``<root>/run``, keys ``<root>/keys.txt``, output ``<root>/output.txt``.

    Made once per test session: xdist workers share it (a file lock; the tiny data set is the same
    bytes in every worker, so any worker's copy trains it).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make_ddp_reference(tiny_audioset, tmp_path_factory.mktemp("ddp_reference"))
    shared = tmp_path_factory.getbasetemp().parent / "ddp_reference"  # this session's, above the workers' dirs
    with FileLock(f"{shared}.lock"):
        if not (shared / "output.txt").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            make_ddp_reference(tiny_audioset, shared)
    return shared


def make_ddp_reference(data: Path, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    command = [BIN / "panns-train", *ddp_overrides(data, root, root / "keys.txt"), "trainer=ddp", "trainer.devices=2"]
    result = run([*command, f"hydra.run.dir={root / 'run'}"], env=DDP_ENV)
    (root / "output.txt").write_text(result.stdout + result.stderr)  # last: marks the run complete
    return root


@pytest.fixture()
def two_torch_threads():
    """Inference tests run their models on two threads, whatever an earlier test left set."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reference_models():
    """``panns_inference/models.py`` (a dev dependency) loaded by path: its package ``__init__`` would
    download AudioSet's labels. Upstream's Cnn14 and Cnn14_DecisionLevelMax as panns_inference ships them."""
    spec = importlib.util.find_spec("panns_inference")  # locates without running __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("panns-inference is not installed (test-only: pip install --no-deps panns-inference)")
    pytest.importorskip("torchlibrosa")
    pytest.importorskip("matplotlib")  # imported (unused) by panns_inference/models.py
    package_dir = Path(list(spec.submodule_search_locations)[0])
    package = types.ModuleType(REFERENCE_PACKAGE)
    package.__path__ = [str(package_dir)]
    sys.modules[REFERENCE_PACKAGE] = package
    try:
        for name in ("pytorch_utils", "models"):  # models.py imports .pytorch_utils
            module_spec = importlib.util.spec_from_file_location(
                f"{REFERENCE_PACKAGE}.{name}", package_dir / f"{name}.py"
            )
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        yield sys.modules[f"{REFERENCE_PACKAGE}.models"]
    finally:
        for name in [n for n in sys.modules if n == REFERENCE_PACKAGE or n.startswith(REFERENCE_PACKAGE + ".")]:
            del sys.modules[name]
