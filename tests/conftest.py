"""Fixtures shared by the test files that run training (helpers live in train_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train_fixtures import make_tiny_audioset


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
