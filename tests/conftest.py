"""Fixtures shared by the test files that run training (helpers live in train_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_fixtures import make_tiny_audioset


@pytest.fixture(scope="session")
def tiny_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 16 kHz synthetic AudioSet converted to shards with the real CLI (made once per session)."""
    return make_tiny_audioset(tmp_path_factory.mktemp("tiny_audioset"))
