"""``panns-train dry_run=true`` / ``make pretrain DRY_RUN=1``: the plan of a run, nothing trained.

The first shard it names for each rank must be the one that rank's stream really opens first (a
reader that records what it opens), and that stream must be the one the 2-process reference run
trained on (its first batch's clips).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from panns_lightning.cli.build import build_datamodule
from panns_lightning.cli.config_schema import validate_train_config
from panns_lightning.cli.dry_run import epoch_time_lines
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.cli.train import train
from panns_lightning.data.spec import ReaderSlot
from train_fixtures import REPO, ddp_overrides, rank_keys


def write_bench_figure(log_dir: Path, clips_per_s: float, model: str = "Cnn6") -> Path:
    """A results.json as benchmarks/bench_loop.py writes it (make bench-train)."""
    path = log_dir / "bench_loop" / "runs" / "20260101-120000" / "results.json"
    path.parent.mkdir(parents=True)
    figures = {"device": "CPU (2 cores)", "model": model, "seconds": 1.0, "rate": 16000, "batch": 4, "workers": 0}
    rows = [{"row": "ours", "loop": clips_per_s}, {"row": "reference-fp32", "loop": 1.0}]
    path.write_text(json.dumps({**figures, "rows": rows}))
    return path


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return validate_train_config(compose("train", overrides=overrides))


def recording(reader: Callable[..., Any], opened: list[str]) -> Callable[..., Any]:
    """``reader``, noting the name of every shard it opens in ``opened``."""

    def read(url: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(url).name)
        return reader(url, *args, **kwargs)

    return read


@pytest.mark.slow
def test_dry_run_prints_the_plan_without_training(
    tiny_audioset: Path, ddp_reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figure = write_bench_figure(tmp_path / "outputs", clips_per_s=8.0)
    out = tmp_path / "run"
    overrides = [
        *ddp_overrides(tiny_audioset, tmp_path, tmp_path / "keys.txt"),
        "trainer=ddp",
        "trainer.devices=2",
        f"paths.output_dir={out}",
    ]
    # panns-train's own function, in this process (a console script would cost a start-up).
    assert train(compose_train([*overrides, "dry_run=true"])) == {}
    lines = capsys.readouterr().out.splitlines()
    assert "  dry_run: true" in lines  # the composed config
    assert "world size: 2 = trainer.devices=2 per node x trainer.num_nodes=1 (accelerator cpu)" in lines
    assert "per optimizer step: 4 clips per rank x 2 ranks x 1 accumulated = 8 clips (4 mixed examples)" in lines
    # The shard named first for each rank is the one its stream opens first, and that stream's
    # first batch is the one the reference run trained on.
    cfg = compose_train(overrides)
    datamodule = build_datamodule(cfg.data, cfg.speed)
    for rank in (0, 1):
        named = next(line for line in lines if line.startswith(f"  rank {rank}: ")).split(": ")[1]
        stream, opened = datamodule.train_stream(rank, 2), []
        stream.reader = recording(stream.reader, opened)
        first_batch = next(stream.iter_slot(ReaderSlot(rank, 2, 0, 1)))
        assert opened[0] == named
        assert list(first_batch["key"]) == rank_keys(ddp_reference / "keys.txt", rank)[0][3].split(",")
    # 6 steps x 4 clips per rank at the figure's 8 clips/s; measured for this very setting.
    assert f"time per epoch: ~3 s = 6 steps x 4 clips per rank / 8.0 clips/s (make bench-train, {figure})" in lines
    assert not any("WARNING" in line for line in lines)
    assert not (out / "checkpoints").exists() and not (tmp_path / "keys.txt").exists()  # nothing trained


def test_epoch_estimate_names_what_differs_or_that_there_is_no_figure(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {
            "paths": {"log_dir": str(tmp_path)},
            "data": {"steps_per_epoch": 2000, "batch_size": 64},
            "model": {"name": "Cnn14"},
        }
    )
    assert epoch_time_lines(cfg, 10.0, 32000)[0].startswith("time per epoch: no estimate: no make bench-train figure")
    write_bench_figure(tmp_path, clips_per_s=400.0)
    lines = epoch_time_lines(cfg, 10.0, 32000)
    assert lines[0].startswith("time per epoch: ~5 min 20 s = 2000 steps x 64 clips per rank / 400.0 clips/s")
    assert lines[2] == (
        "  WARNING: measured for another setting (model Cnn6 there, Cnn14 here; seconds 1.0 there, 10.0 here; "
        "rate 16000 there, 32000 here; batch 4 there, 64 here): a rough guide only"
    )


def test_make_pretrain_dry_run_passes_the_flag() -> None:
    listing = subprocess.run(
        ["make", "-n", "pretrain", "DRY_RUN=1", "AUDIOSET_SHARDS=/data/as", "GPUS=8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "data.test_dir=/data/as/eval dry_run=true" in listing and "trainer.devices=8" in listing
