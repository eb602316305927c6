"""Acceptance (issue 8): training and validation over damaged shard sets, through panns-train.

The damage, on copies of the tiny synthetic AudioSet's shards: a truncated tar, a member whose
audio bytes are garbage, a member whose JSON has no labels, and a shard the manifest lists but
that does not exist. Each is logged with its shard (and key), counted, skipped; past the error
budget the run stops with a message instead of training on what is left.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from train_fixtures import BIN, REPO, demo_overrides


def rewrite_member(shard: Path, member_suffix: str, new_bytes) -> str:  # noqa: ANN001
    """Replace the payload of the first member ending in ``member_suffix``; returns that clip's key."""
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers() if info.isfile()]
    target = next(info.name for info, _ in members if info.name.endswith(member_suffix))
    key = target[: -len(member_suffix)]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name == target:
                data = new_bytes(data)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return key


def damage(source: Path, target: Path) -> dict[str, str]:
    """A copy of ``source`` with the four kinds of damage; returns where each one is."""
    shutil.copytree(source, target)
    shards = sorted(target.glob("shard-*.tar"))
    assert len(shards) >= 4, "the tiny set is written with --min-shards 4"
    corrupt_key = rewrite_member(shards[0], ".npy", lambda data: b"\x93NUMPY garbage" + data[:50])
    unlabelled_key = rewrite_member(shards[1], ".json", lambda data: json.dumps({"source": "x.wav"}).encode())
    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])
    shards[3].unlink()
    return {
        "corrupt": corrupt_key,
        "unlabelled": unlabelled_key,
        "truncated": shards[2].name,
        "missing": shards[3].name,
    }


@pytest.fixture(scope="module")
def hostile(tiny_audioset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("hostile")
    train = damage(tiny_audioset / "train", root / "train")
    val = damage(tiny_audioset / "eval", root / "eval")
    return root, train, val


def train_on(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        *demo_overrides(root, out),
        f"hydra.run.dir={out}",
        "data.num_workers=0",
        "data.steps_per_epoch=30",
        "trainer.max_steps=30",
        "test=false",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(BIN / "panns-train"), *args], capture_output=True, text=True, cwd=REPO, env=env)


@pytest.mark.slow
def test_training_and_validation_skip_and_count_every_kind_of_damage(
    hostile: tuple[Path, dict, dict], tmp_path: Path
) -> None:
    root, train, val = hostile
    result = train_on(root, tmp_path / "run", "data.error_budget=0.9")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "expected {'labels'" in log, "the unlabelled member's reason"
    for split, damaged in (("train", train), ("val", val)):
        assert f"{split}: skipped clip {damaged['corrupt']!r}" in log
        assert f"{split}: skipped clip {damaged['unlabelled']!r}" in log
        assert f"{split}: stopped reading" in log and damaged["truncated"] in log
        assert damaged["missing"] in log and "cannot open" in log
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("data/bad_samples")]
    assert rows, "the counts reach the training log"
    # Train + val, each: the corrupt and the unlabelled clip (at least once), the truncated and the missing shard.
    assert float(rows[-1]["data/bad_samples"]) >= 4
    assert float(rows[-1]["data/bad_shards"]) >= 4


@pytest.mark.slow
def test_past_the_error_budget_the_run_stops_with_a_clear_message(
    hostile: tuple[Path, dict, dict], tmp_path: Path
) -> None:
    root, _, _ = hostile
    result = train_on(root, tmp_path / "run", "data.error_budget=0.05", "data.error_budget_min_clips=20")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("panns-train: train data over its error budget"), result.stderr[-3000:]
    assert "data.error_budget=0.05" in last_line and "broken or missing shard(s)" in last_line
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists(), "it stopped before any validation"
