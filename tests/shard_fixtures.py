"""Tiny shard sets for the data tests, written with ``webdataset.TarWriter`` per docs/architecture.md.

Independent of ``panns_lightning.shardset`` on purpose: the stream must read what the documented
format says, whoever wrote it.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import webdataset as wds

SAMPLE_RATE = 8000
CLIP_SAMPLES = 800  # 0.1 s


@dataclass
class FixtureClip:
    key: str
    labels: list[int]
    # Member bytes to write instead of the encoded ones, e.g. {"npy": b"garbage"}; None drops a member.
    override: dict[str, bytes | None] = field(default_factory=dict)


def clip_waveform(key: str, clip_samples: int = CLIP_SAMPLES) -> np.ndarray:
    """A deterministic waveform per key, so tests can check the decoded audio."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return (rng.uniform(-0.5, 0.5, clip_samples)).astype(np.float32)


def write_shard_set(
    directory: str | Path,
    clips: Sequence[FixtureClip],
    shard_sizes: Sequence[int],
    *,
    num_classes: int,
    storage: str = "int16",
    sample_rate: int = SAMPLE_RATE,
    clip_samples: int = CLIP_SAMPLES,
    multilabel: bool = True,
    split: str = "train",
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write ``clips`` into shards of the given sizes (in order) plus manifest.json; returns the directory."""
    if sum(shard_sizes) != len(clips):
        raise ValueError(f"shard sizes {list(shard_sizes)} do not add up to {len(clips)} clips")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = list(label_names) if label_names is not None else [f"class_{index:02d}" for index in range(num_classes)]
    shards = []
    start = 0
    for shard_index, size in enumerate(shard_sizes):
        name = f"shard-{shard_index:06d}.tar"
        members = clips[start : start + size]
        start += size
        with wds.TarWriter(str(out / name)) as writer:
            for clip in members:
                writer.write(_encoded_sample(clip, storage, sample_rate, clip_samples))
        shards.append({"name": name, "num_clips": size, "class_counts": _class_counts(members, num_classes)})
    manifest = {
        "format_version": 1,
        "dataset": "fixture",
        "split": split,
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
        "storage": storage,
        "multilabel": multilabel,
        "labels": [{"index": index, "mid": f"/m/{index}", "name": name} for index, name in enumerate(names)],
        "num_clips": len(clips),
        "class_counts": _class_counts(clips, num_classes),
        "shards": shards,
        "skipped": [],
        "num_skipped": 0,
        "created_by": "tests/shard_fixtures.py",
        "created_at": "2026-01-01T00:00:00",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def simple_clips(count: int, num_classes: int, prefix: str = "clip") -> list[FixtureClip]:
    """``count`` clips, clip i labelled ``i % num_classes``."""
    return [FixtureClip(f"{prefix}{index:05d}", [index % num_classes]) for index in range(count)]


def long_tailed_clips(
    num_classes: int = 12, largest: int = 1200, smallest: int = 10, seed: int = 0
) -> list[FixtureClip]:
    """Multi-label clips whose primary-class counts fall geometrically from ``largest`` to ``smallest``.

    A quarter of the clips get a second label drawn in proportion to class size, as co-occurrence
    with frequent classes does in AudioSet. Clips are shuffled so shards mix classes.
    """
    rng = np.random.default_rng(seed)
    ratio = (smallest / largest) ** (1 / (num_classes - 1))
    primary_counts = [round(largest * ratio**index) for index in range(num_classes)]
    weights = np.array(primary_counts, dtype=float) / sum(primary_counts)
    clips = []
    for label, count in enumerate(primary_counts):
        for _ in range(count):
            labels = [label]
            if rng.random() < 0.25:
                extra = int(rng.choice(num_classes, p=weights))
                if extra != label:
                    labels.append(extra)
            clips.append(labels)
    order = rng.permutation(len(clips))
    return [FixtureClip(f"lt{position:05d}", clips[index]) for position, index in enumerate(order)]


def truncate_file(path: str | Path, keep_fraction: float) -> None:
    """Cut a shard short, as an interrupted copy would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def _encoded_sample(clip: FixtureClip, storage: str, sample_rate: int, clip_samples: int) -> dict[str, object]:
    waveform = clip_waveform(clip.key, clip_samples)
    audio_ext = {"int16": "npy", "flac": "flac"}[storage]
    samples = np.clip(np.round(waveform * 32767), -32768, 32767).astype(np.int16)  # the documented quantisation
    buffer = io.BytesIO()
    if storage == "int16":
        np.save(buffer, samples)
    else:
        soundfile.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
    audio = buffer.getvalue()
    members: dict[str, bytes | None] = {
        audio_ext: audio,
        "json": json.dumps({"labels": clip.labels, "source": f"synthetic/{clip.key}.wav"}).encode(),
    }
    members.update(clip.override)
    sample: dict[str, object] = {"__key__": clip.key}
    sample.update({ext: payload for ext, payload in members.items() if payload is not None})
    return sample


def _class_counts(clips: Sequence[FixtureClip], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for clip in clips:
        for label in set(clip.labels):
            counts[label] += 1
    return counts


def keys_of(batches: Sequence[Mapping[str, object]]) -> list[str]:
    return [key for batch in batches for key in batch["key"]]  # type: ignore[union-attr]
