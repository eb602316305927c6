"""run_inspect: the shard-set summary and the measured train-stream draws."""

from __future__ import annotations

from pathlib import Path

import pytest
from shard_fixtures import long_tailed_clips, write_shard_set

from panns_lightning.data import run_inspect


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clips = long_tailed_clips(8, largest=400, smallest=4, seed=1)
    third = len(clips) // 3
    return write_shard_set(
        tmp_path_factory.mktemp("inspect"), clips, [third, third, len(clips) - 2 * third], num_classes=9
    )


def test_summary_without_draws(long_tail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_inspect(long_tail)
    printed = capsys.readouterr().out
    assert report["num_shards"] == 3 and report["storage"] == "int16"
    assert report["num_clips"] == sum(1 for _ in long_tailed_clips(8, largest=400, smallest=4, seed=1))
    assert report["clip_seconds"] == pytest.approx(0.1)
    assert report["empty_classes"] == ["class_08"]  # 9 labels, only 8 used
    assert "stream" not in report
    assert "3 shards" in printed and "class_00=" in printed and "1 without clips" in printed


def test_draws_measure_the_balanced_and_plain_streams(long_tail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    balanced = run_inspect(long_tail, balanced=True, draws=3000, seed=0, batch_size=30)["stream"]
    plain = run_inspect(long_tail, balanced=False, draws=3000, seed=0, batch_size=30)["stream"]
    printed = capsys.readouterr().out
    assert balanced["draws"] == plain["draws"] == 3000 and balanced["batches"] == 100
    assert balanced["share"][8] is None and balanced["coverage"][8] is None, "empty class is not measured"
    assert balanced["min_share"] > 0.7 > 0.3 > plain["min_share"]
    assert balanced["max_min_ratio"] < plain["max_min_ratio"]
    assert plain["min_coverage"] > 0.9, "a plain stream of 3000 draws passes over every clip"
    assert balanced["batches_with_repeat"] == 0 and balanced["bad_samples"] == 0
    assert "balanced: 3000 draws" in printed and "plain shuffled: 3000 draws" in printed
