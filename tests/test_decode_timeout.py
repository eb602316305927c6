"""A decoder that hangs on one file costs that file, not the conversion (shardset/decode_pool.py).

The hang is injected into ``audio.load_audio`` (the decode path of every converter) and reaches
the worker processes through fork, as the crash test in test_hostile_audio.py does. The hung
"decoder" blocks SIGTERM and SIGINT, as C code stuck in a loop effectively does, so only a
SIGKILL ends it. Checked: the conversion finishes, the file is skipped with reason ``decode timed
out after 1 s``, every other clip is in the shards, and the stuck worker process is gone.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning import audio
from panns_lightning.cli import prepare
from panns_lightning.datasets.esc50 import write_synthetic_esc50
from panns_lightning.shardset import ClipRecord, read_manifest
from panns_lightning.shardset.writer import write_shards

RATE = 8000
CLIP = RATE // 2
HANG = "hang"  # a source path containing this hangs the decoder

needs_fork = pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the injected hang reaches workers through fork"
)


@pytest.fixture
def hanging_decoder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Patch the decoder to hang on HANG files; returns the file where the hung worker writes its pid."""
    pid_file = tmp_path / "hung.pid"
    real_load = audio.load_audio

    def load_or_hang(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if HANG in Path(str(path)).name:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            pid_file.write_text(str(os.getpid()))
            while True:
                time.sleep(3600)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(audio, "load_audio", load_or_hang)
    return pid_file


def shard_keys(out: Path) -> set[str]:
    keys = set()
    for shard in out.glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            keys |= {member.name.rsplit(".", 1)[0] for member in tar if member.name.endswith(".json")}
    return keys


def assert_gone(pid_file: Path) -> None:
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.slow
@pytest.mark.timeout(120)  # without the timeout the conversion would wait for ever
@needs_fork
def test_a_hanging_decoder_costs_only_its_file(hanging_decoder: Path, tmp_path: Path) -> None:
    source = tmp_path / "fine.wav"
    sf.write(source, np.random.default_rng(0).uniform(-0.3, 0.3, CLIP).astype(np.float32), RATE)
    hanger = tmp_path / f"{HANG}.wav"
    hanger.write_bytes(source.read_bytes())
    records = [ClipRecord(f"clip{i}", source, (i % 2,)) for i in range(40)]
    records.insert(13, ClipRecord(HANG, hanger, (0,)))
    labels = [{"index": 0, "mid": "a", "name": "a"}, {"index": 1, "mid": "b", "name": "b"}]
    # Two workers and 41 clips: chunks of the healthy worker are in flight when the other one is killed.
    manifest = write_shards(records, tmp_path / "out", sample_rate=RATE, clip_samples=CLIP, labels=labels,
                            dataset="t", split="s", min_shards=3, num_workers=2, progress=False,
                            decode_timeout=1)  # fmt: skip
    assert [(s.key, s.reason) for s in manifest.skipped] == [(HANG, "decode timed out after 1 s")]
    assert manifest.num_clips == 40
    assert shard_keys(tmp_path / "out") == {f"clip{i}" for i in range(40)}
    assert_gone(hanging_decoder)


@pytest.mark.slow
@pytest.mark.timeout(120)  # without the timeout the conversion would wait for ever
@needs_fork
def test_panns_prepare_decode_timeout_reports_the_file_and_converts_the_rest(
    hanging_decoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = write_synthetic_esc50(
        tmp_path / "esc50", num_classes=2, clips_per_class=10, clip_seconds=0.5, sample_rate=RATE
    )
    with open(root / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    victim = rows[3]["filename"]
    hung_name = f"{HANG}-{victim}"
    (root / "audio" / victim).rename(root / "audio" / hung_name)
    text = (root / "meta" / "esc50.csv").read_text().replace(victim, hung_name)
    (root / "meta" / "esc50.csv").write_text(text)

    code = prepare.main(["esc50", "--root", str(root), "--out", str(tmp_path / "out"), "--sample-rate", str(RATE),
                         "--clip-seconds", "0.5", "--min-shards", "2", "--workers", "1", "--decode-timeout", "1", "--quiet"])  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    print(output)  # the CLI's summary, for the record
    assert "1  decode timed out after 1 s" in output
    manifest = read_manifest(tmp_path / "out")
    assert [(s.source, s.reason) for s in manifest.skipped] == [(f"audio/{hung_name}", "decode timed out after 1 s")]
    assert manifest.num_clips == len(rows) - 1
    assert_gone(hanging_decoder)


def test_decode_timeout_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = prepare.main(["esc50", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--decode-timeout", "-1"])
    assert code == 2
    assert "--decode-timeout must be >= 0" in capsys.readouterr().err
