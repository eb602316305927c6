"""Numerical parity with the reference PANNs implementation shipped in ``panns-inference``.

Test-only dependency (``pip install --no-deps panns-inference``). Its package ``__init__``
downloads the AudioSet labels at import, so ``models.py`` and ``pytorch_utils.py`` are loaded by
file path under a private package name and the ``__init__`` never runs.
"""

from __future__ import annotations

import pytest
import torch

from panns_lightning.models import FRONTEND_DEFAULTS, build_model
from test_inference_support import randomise_

TOLERANCE = 1e-5


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
