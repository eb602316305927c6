"""Fixtures shared by the test files that run training (helpers live in train_fixtures.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from train_fixtures import BIN, DDP_ENV, ddp_overrides, make_tiny_audioset, run


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
