"""Data throughput: our streamed shards (int16, FLAC), PANNs' sampler over the shards by random access
(``data.sampler=panns``) and the upstream PANNs path (HDF5 + index sampler).

    python benchmarks/bench_data.py [--clips 200] [--seconds 10] [--rate 32000] [--batches 20] [--quick] [--cold]

1. Writes ``--clips`` synthetic clips (random tones + noise, long-tailed labels) as WAV, converts
   them with the real ``shards.write_shards`` into int16 and FLAC shard sets (converter clips/s).
2. Training stream: the DataModule's train loader (read → balanced sampling → decode → crop →
   collate) with 0, 1 and 2 workers per storage; the first batch (worker start, buffer fill) is
   not timed.
3. Upstream-style: the same clips as an HDF5 file of int16 waveforms (x·32767, as PANNs stores
   them) read by a map-style Dataset (the file opened lazily per worker, waveform / 32767 + target)
   through a torch DataLoader whose batches come from PANNs' BalancedTrainSampler (``reference.py``),
   with the same worker counts.
4. Exact: the DataModule's train loader with ``sampler="panns"``: the same sampler's draws, each
   clip read by one ``pread`` at the offset the clip index gives, then decoded as the stream does.

Warm (default): every path reads files just written, i.e. mostly from the page cache; this
compares CPU cost per clip, not disks. ``--cold`` adds rows (int16 and HDF5) where every batch is
requested with the data files dropped from the page cache first (``posix_fadvise(DONTNEED)`` on
each shard / the HDF5 file, main process): as if the set were far larger than RAM, every clip
comes from the disk, apart from what the kernel's read-ahead of the same batch brings. With
workers, batches already prefetched were read before the drop, so worker rows are optimistic.
Prints a table; asserts nothing (speed belongs here, not in tests).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 20


# --------------------------------------------------------------------------- synthetic clips


def write_synthetic_clips(root: Path, clips: int, seconds: float, rate: int, seed: int = 0) -> list[Any]:
    """WAV files of tones + noise with long-tailed labels; returns ``ClipRecord``s for ``write_shards``."""
    from panns_lightning.shardset import ClipRecord

    rng = np.random.default_rng(seed)
    audio_dir = root / "wav"
    audio_dir.mkdir(parents=True, exist_ok=True)
    class_weights = 1.0 / np.arange(1, NUM_CLASSES + 1) ** 1.2  # Zipf-like: rare classes exist
    class_weights /= class_weights.sum()
    time_axis = np.arange(int(seconds * rate)) / rate
    records = []
    for index in range(clips):
        labels = sorted({int(label) for label in rng.choice(NUM_CLASSES, size=rng.integers(1, 4), p=class_weights)})
        waveform = 0.05 * rng.standard_normal(time_axis.size)
        for label in labels:
            frequency = 110.0 * 2 ** (label / 4)
            waveform += 0.2 * np.sin(2 * np.pi * frequency * time_axis + rng.uniform(0, 2 * np.pi))
        path = audio_dir / f"clip{index:05d}.wav"
        soundfile.write(path, np.clip(waveform, -1, 1).astype(np.float32), rate, subtype="PCM_16")
        records.append(ClipRecord(key=f"clip{index:05d}", audio_path=path, labels=tuple(labels)))
    return records


def convert(records: list[Any], out: Path, *, seconds: float, rate: int, storage: str) -> float:
    """Write a shard set with the real writer; returns clips/s."""
    from panns_lightning.shardset.writer import write_shards

    labels = [{"index": index, "mid": f"/bench/{index}", "name": f"class {index}"} for index in range(NUM_CLASSES)]
    start = time.perf_counter()
    write_shards(
        records,
        out,
        sample_rate=rate,
        clip_samples=int(seconds * rate),
        labels=labels,
        dataset="bench",
        split="train",
        storage=storage,
        clips_per_shard=max(1, len(records) // 8),
        min_shards=8,
        progress=False,
        overwrite=True,
    )
    return len(records) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- our stream


def stream_speed(
    shard_dir: Path, *, workers: int, batches: int, batch_size: int, sampler: str = "stream", cold: bool = False
) -> float:
    """Clips/s of the DataModule's train loader after its first batch (``sampler="panns"``: the exact mode)."""
    from panns_lightning.data import AudioShardDataModule

    datamodule = AudioShardDataModule(
        train_dir=str(shard_dir),
        batch_size=batch_size,
        num_workers=workers,
        steps_per_epoch=batches,
        sampler=sampler,
        # A small buffer keeps reading in the timed part (a big one would be filled before batch 1).
        shuffle_buffer=2 * batch_size,
    )
    datamodule.setup("fit")
    files = sorted(shard_dir.glob("shard-*.tar")) if cold else []
    return _timed(datamodule.train_dataloader(), before_batch=lambda: drop_from_page_cache(files))


# --------------------------------------------------------------------------- upstream-style HDF5


def write_hdf5(shard_dir: Path, path: Path) -> list[tuple[int, ...]]:
    """The int16 shard set's clips as PANNs' HDF5 (``waveform`` int16 [N, T], ``target`` bool [N, C])."""
    import h5py

    from panns_lightning.data.error_log import ErrorLog
    from panns_lightning.data.shard_urls import shard_urls
    from panns_lightning.data.tar_reader import read_shard
    from panns_lightning.shardset import read_manifest

    manifest = read_manifest(shard_dir)
    clips = [
        clip
        for url in shard_urls(shard_dir, manifest)
        for clip in read_shard(url, storage="int16", with_audio=True, errors=ErrorLog("bench"))
    ]
    samples = manifest.clip_samples
    with h5py.File(path, "w") as handle:
        waveforms = handle.create_dataset("waveform", (len(clips), samples), dtype=np.int16)
        targets = handle.create_dataset("target", (len(clips), NUM_CLASSES), dtype=bool)
        for index, clip in enumerate(clips):
            waveforms[index] = _npy(clip.audio)  # the stored int16 = round(x * 32767), as upstream
            targets[index, list(clip.labels)] = True
    return [clip.labels for clip in clips]


class Hdf5Clips(Dataset):
    """PANNs-style map dataset: opens the HDF5 file on first use in each worker, returns waveform / 32767."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        waveform = self._file["waveform"][index].astype(np.float32) / 32767.0
        target = self._file["target"][index].astype(np.float32)
        return {"waveform": waveform, "target": target}


class BalancedBatches:
    """A ``batch_sampler``: endless batches of indices from PANNs' BalancedTrainSampler."""

    def __init__(self, label_lists: list[tuple[int, ...]], batch_size: int, seed: int = 0) -> None:
        from panns_lightning.data.diagnostics.reference import PannsBalancedSampler

        self.sampler = PannsBalancedSampler(label_lists, NUM_CLASSES, seed=seed)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        return self.sampler.batches(self.batch_size)


def hdf5_speed(
    path: Path, label_lists: list[tuple[int, ...]], *, workers: int, batches: int, batch_size: int, cold: bool = False
) -> float:
    loader = DataLoader(Hdf5Clips(path), batch_sampler=BalancedBatches(label_lists, batch_size), num_workers=workers)
    return _timed(loader, limit=batches, before_batch=lambda: drop_from_page_cache([path] if cold else []))


def drop_from_page_cache(paths: Iterable[Path]) -> None:
    """Ask the kernel to forget the cached pages of ``paths`` (clean pages go at once; Linux)."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


# --------------------------------------------------------------------------- helpers


def _timed(loader: Iterable[dict[str, Any]], limit: int | None = None, before_batch: Any = None) -> float:
    """Clips/s over the batches after the first (worker start-up and buffer fill left out)."""
    start, clips = 0.0, 0
    iterator = iter(loader)

    def batches(source: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        while True:
            if before_batch is not None:
                before_batch()
            try:
                yield next(source)
            except StopIteration:
                return

    for index, batch in enumerate(batches(iterator)):
        if index == 0:
            start = time.perf_counter()
            continue
        clips += batch["waveform"].shape[0]
        if limit is not None and index + 1 >= limit:
            break
    elapsed = time.perf_counter() - start
    del iterator  # shut workers down before the next configuration starts its own
    return clips / elapsed if clips else float("nan")


def _npy(data: bytes | None) -> np.ndarray:
    import io

    assert data is not None
    return np.load(io.BytesIO(data), allow_pickle=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=32000)
    parser.add_argument("--batches", type=int, default=20, help="batches per configuration (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a sub-minute run: 64 clips, 6 batches of 16")
    parser.add_argument(
        "--cold", action="store_true", help="also int16 and HDF5 with the files dropped from the page cache per batch"
    )
    parser.add_argument("--dir", type=Path, default=None, help="write the data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.batches, args.batch_size = 64, 6, 16

    torch.set_num_threads(1)  # the loaders' work is what is measured, not intra-op threads
    print(
        f"{args.clips} clips of {args.seconds:g} s at {args.rate} Hz, batch {args.batch_size}, "
        f"{args.batches} batches per configuration (first not timed), workers {args.workers}"
    )
    rows: list[tuple[str, str, float, float | None]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        records = write_synthetic_clips(root, args.clips, args.seconds, args.rate)
        shard_dirs = {}
        for storage in ("int16", "flac"):
            shard_dirs[storage] = root / f"shards-{storage}"
            speed = convert(records, shard_dirs[storage], seconds=args.seconds, rate=args.rate, storage=storage)
            print(f"converter      {storage:>5}: {speed:7.1f} clips/s (write_shards, WAV in)")
        h5_path = root / "waveforms.h5"
        label_lists = write_hdf5(shard_dirs["int16"], h5_path)
        for workers in args.workers:
            options = dict(workers=workers, batches=args.batches, batch_size=args.batch_size)
            hdf5 = hdf5_speed(h5_path, label_lists, **options)
            rows.append(("HDF5 + PANNs sampler", str(workers), hdf5, None))
            for storage in ("int16", "flac"):
                rows.append((f"stream {storage}", str(workers), stream_speed(shard_dirs[storage], **options), hdf5))
                exact = stream_speed(shard_dirs[storage], sampler="panns", **options)
                rows.append((f"exact {storage}", str(workers), exact, hdf5))
            if args.cold:
                hdf5 = hdf5_speed(h5_path, label_lists, cold=True, **options)
                rows.append(("cold HDF5 + PANNs", str(workers), hdf5, None))
                for sampler, name in (("stream", "cold stream int16"), ("panns", "cold exact int16")):
                    speed = stream_speed(shard_dirs["int16"], sampler=sampler, cold=True, **options)
                    rows.append((name, str(workers), speed, hdf5))
    print(f"\n{'path':<22} {'workers':>7} {'clips/s':>9} {'vs HDF5':>8}\n{'-' * 49}")  # cold rows: vs cold HDF5
    for name, workers, speed, hdf5 in sorted(rows, key=lambda row: (row[0], row[1])):
        ratio = f"{speed / hdf5:7.2f}x" if hdf5 else ""
        print(f"{name:<22} {workers:>7} {speed:9.1f} {ratio:>8}")


if __name__ == "__main__":
    main()
