"""make bench: throughput figures for the converter, the training stream and a train step.

Prints a table; asserts nothing (speed belongs here, not in tests). Everything is generated in a
temporary directory: synthetic AudioSet-format audio → `panns-prepare audioset` path → shards.

    python benchmarks/run.py [--clips 400] [--seconds 10] [--rate 32000] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def bench_converter(root: Path, clips: int, seconds: float, rate: int, storage: str) -> tuple[Path, float]:
    from panns_lightning.datasets.audioset import read_audioset
    from panns_lightning.labels import read_label_csv
    from panns_lightning.shardset.writer import write_shards

    raw = root / "raw"
    if not raw.exists():
        from panns_lightning.datasets.synthetic import generate_synthetic_audioset

        generate_synthetic_audioset(raw, num_train=clips, num_eval=16, clip_seconds=seconds, progress=False)
    labels = read_label_csv(raw / "class_labels_indices.csv")
    result = read_audioset(raw / "balanced_train_segments.csv", raw / "audio", labels)
    out = root / f"shards-{storage}"
    start = time.perf_counter()
    write_shards(
        result.records,
        out,
        sample_rate=rate,
        clip_samples=int(seconds * rate),
        labels=labels.to_manifest(),
        dataset="audioset",
        split="balanced_train",
        storage=storage,
        clips_per_shard=max(1, clips // 8),
        progress=False,
        overwrite=True,
    )
    return out, len(result.records) / (time.perf_counter() - start)


def bench_stream(shards: Path, workers: int, batches: int, batch_size: int) -> float:
    from panns_lightning.data import AudioShardDataModule

    datamodule = AudioShardDataModule(
        train_dir=str(shards),
        batch_size=batch_size,
        num_workers=workers,
        steps_per_epoch=batches,
        shuffle_buffer=256,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    start, clips = None, 0
    for i, batch in enumerate(loader):
        if i == 0:  # leave out worker start-up and buffer filling
            start = time.perf_counter()
            continue
        clips += batch["waveform"].shape[0]
    assert start is not None
    return clips / (time.perf_counter() - start)


def bench_train_step(model_name: str, rate: int, seconds: float, batch: int, steps: int, **frontend) -> float:
    from panns_lightning.models import build_model

    model = build_model(model_name, sample_rate=rate, classes_num=527, **frontend)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    waveform = torch.randn(batch, int(rate * seconds))
    target = (torch.rand(batch, 527) > 0.99).float()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        output = model(waveform)["clipwise_output"]
        loss = torch.nn.functional.binary_cross_entropy(output.clamp(1e-7, 1 - 1e-7), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / (sum(times[1:]) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=32000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="train steps per model")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = [("torch threads", str(torch.get_num_threads()))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for storage in ("int16", "flac"):
            shards, rate = bench_converter(root, args.clips, args.seconds, args.rate, storage)
            rows.append((f"convert ({storage}, {args.seconds:g} s @ {args.rate} Hz)", f"{rate:8.1f} clips/s"))
            for workers in (0, 1, 2):
                speed = bench_stream(shards, workers, args.batches, args.batch_size)
                rows.append((f"train stream ({storage}, {workers} workers)", f"{speed:8.1f} clips/s"))
    rows.append(
        (
            "train step Cnn6 (demo: 16 kHz, 2 s, batch 32)",
            f"{bench_train_step('Cnn6', 16000, 2.0, 32, args.steps, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000):8.1f} clips/s",
        )
    )
    rows.append(
        (
            "train step Cnn14 (32 kHz, 10 s, batch 4)",
            f"{bench_train_step('Cnn14', 32000, 10.0, 4, args.steps, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000):8.1f} clips/s",
        )
    )
    width = max(len(name) for name, _ in rows)
    print(f"\n{'benchmark':<{width}}  result\n{'-' * (width + 20)}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
