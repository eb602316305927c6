"""Acceptance (issue 15): panns-train trains, validates and tests from shard sets on an HTTP server.

The tiny synthetic AudioSet (converted by the real CLI, conftest.py) is served by a separate
server process (tests/http_shard_server.py) in which, in both the train and the eval set,
``shard-000001.tar`` answers 404 and ``shard-000002.tar`` is cut in the middle of a clip: the
server promises the whole file (Content-Length) and closes the connection after half of that
clip's audio. ``data.*_dir`` are the sets' URLs: manifests and shards both come over HTTP.
Checked: the run completes; each bad shard is logged with its URL and reason (the status; the
byte counts of the cut, after one retry that resumed with a Range request); the counts reach the
log; val and test scored exactly the clips of the two good shards plus the clips before the cut.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from train_fixtures import BIN, REPO, demo_overrides

TESTS = Path(__file__).resolve().parent
MISSING, CUT = "shard-000001.tar", "shard-000002.tar"
CUT_CLIP = 3  # the cut falls in the audio of the 4th clip: the three before it are read


def cut_offset(shard: Path) -> tuple[int, str]:
    """(a byte offset in the middle of clip CUT_CLIP's audio, the key of the clip before it)."""
    with tarfile.open(shard) as tar:
        members = [member for member in tar.getmembers() if member.isfile()]
    keys = list(dict.fromkeys(member.name.split(".", 1)[0] for member in members))
    audio = next(member for member in members if member.name == f"{keys[CUT_CLIP]}.npy")
    return audio.offset_data + audio.size // 2, keys[CUT_CLIP - 1]


@pytest.fixture(scope="module")
def server(tiny_audioset: Path) -> Iterator[tuple[str, dict[str, tuple[int, str]]]]:
    """The server process over the tiny set; yields its base URL and, per set, (cut offset, last key before it)."""
    cuts = {split: cut_offset(tiny_audioset / split / CUT) for split in ("train", "eval")}
    faults = []
    for split, (offset, _) in cuts.items():
        faults += ["--missing", f"{split}/{MISSING}", "--cut", f"{split}/{CUT}={offset}"]
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "http_shard_server.py"), str(tiny_audioset), *faults],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("PORT "), f"the server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}", cuts
    finally:
        process.kill()
        process.wait(timeout=10)


def shard_clips(manifest_dir: Path) -> dict[str, int]:
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    return {shard["name"]: shard["num_clips"] for shard in manifest["shards"]}


@pytest.mark.slow
def test_train_validate_and_test_over_http_with_a_404_and_a_cut_shard(
    server: tuple[str, dict[str, tuple[int, str]]], tiny_audioset: Path, tmp_path: Path
) -> None:
    base, cuts = server
    out = tmp_path / "run"
    overrides = [
        *(
            o
            for o in demo_overrides(tiny_audioset, out)
            if not o.startswith(("data.train_dir", "data.val_dir", "data.test_dir"))
        ),
        f"data.train_dir={base}/train",
        f"data.val_dir={base}/eval",
        f"data.test_dir={base}/eval",
        f"hydra.run.dir={out}",
        # 8 x 8 draws > the 51 readable train clips: one pass meets both bad train shards.
        "data.batch_size=8",
        "data.steps_per_epoch=8",
        "trainer.max_steps=8",
        "data.http_retries=1",
        "data.http_timeout=20",
        "data.error_budget=0.9",  # half the shards are broken: the run must go on to show the counts
        "test=true",
        "trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [str(BIN / "panns-train"), *overrides], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]

    for split, directory in (("train", "train"), ("val", "eval"), ("test", "eval")):
        missing_url, cut_url = f"{base}/{directory}/{MISSING}", f"{base}/{directory}/{CUT}"
        offset, last_key = cuts[directory]
        size = (tiny_audioset / directory / CUT).stat().st_size
        assert f"{split}: stopped reading {missing_url} before its first clip: cannot open (HTTP 404 Not Found)" in log
        assert (
            f"{split}: stopped reading {cut_url} after clip {last_key!r}: download failed (connection closed "
            f"after {offset} of {size} bytes; gave up after 1 retry)"
        ) in log, log[-5000:]
        assert f"{cut_url}: connection closed after {offset} of {size} bytes; retry 1 of 1 in 1 s" in log

    # Every clip of the two good eval shards, plus the clips before the cut, scored once each.
    clips = shard_clips(tiny_audioset / "eval")
    readable = sum(clips.values()) - clips[MISSING] - clips[CUT] + CUT_CLIP
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["num_clips"] == readable
    assert metrics["test"]["num_clips"] == readable

    with open(out / "csv" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("data/bad_shards")]
    assert rows, "the counts reach the training log"
    # Train and val each met the 404 and the cut shard at least once (sanity check included).
    assert float(rows[-1]["data/bad_shards"]) >= 4
    assert float(rows[-1]["data/bad_samples"]) == 0
