"""Fixtures shared by the test files that run training (helpers live in train_fixtures.py)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from train_fixtures import make_tiny_audioset

REFERENCE_PACKAGE = "_panns_inference_reference"


@pytest.fixture(scope="session")
def tiny_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 16 kHz synthetic AudioSet converted to shards with the real CLI (made once per session)."""
    return make_tiny_audioset(tmp_path_factory.mktemp("tiny_audioset"))


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
