"""Numerical parity with the reference PANNs implementation shipped in ``panns-inference``.

Test-only dependency (``pip install --no-deps panns-inference``). Its package ``__init__``
downloads the AudioSet labels at import, so ``models.py`` and ``pytorch_utils.py`` are loaded by
file path under a private package name and the ``__init__`` never runs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from panns_lightning.models import FRONTEND_DEFAULTS, build_model
from test_inference_support import randomise_

REFERENCE_PACKAGE = "_panns_inference_reference"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference_models():
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


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", ["Cnn14", "Cnn14_DecisionLevelMax"])
def test_outputs_match_reference(reference_models, name):
    frontend = FRONTEND_DEFAULTS[name]
    ours = build_model(name, **frontend, classes_num=527)
    randomise_(ours)
    reference = getattr(reference_models, name)(**frontend, classes_num=527)
    reference.load_state_dict(ours.state_dict(), strict=True)  # identical key layout
    ours.eval()
    reference.eval()

    waveform = torch.randn(2, int(1.5 * frontend["sample_rate"]), generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        expected = reference(waveform)
        actual = ours(waveform)
    for key, value in expected.items():  # the reference SED model has no embedding; ours adds one
        assert actual[key].shape == value.shape, key
        assert (actual[key] - value).abs().max().item() <= TOLERANCE, key
    assert expected["clipwise_output"].std() > 1e-3  # the comparison is not between constants
