"""The shard-set format (format_version 1): names, member layout and manifest entries.

What a shard set on disk is, in constants and two small functions; ``docs/architecture.md``
("Shard set on disk") is the prose version. The writer (:mod:`.writer`), the manifest reader
(:mod:`.manifest`) and the stream (``panns_lightning.data.stream``) all take these facts from
here. Plain Python: importing this module costs nothing.
"""

from __future__ import annotations

import json

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
"""Written last (temp + rename): a shard directory without it is an incomplete conversion."""
STORAGES = ("int16", "flac")
AUDIO_MEMBER_EXTENSION = {"int16": "npy", "flac": "flac"}
"""Tar member extension of a clip's audio, per ``storage``."""
LABELS_MEMBER_EXTENSION = "json"
SHARD_NAME_FORMAT = "shard-{:06d}.tar"
SHARD_PREFIX = "shard-"
TEMP_SUFFIX = ".tmp"
"""Shards and the manifest are written as ``NAME.tmp`` and renamed."""

SILENT_MANIFEST_KEY = "silent_clips"
"""Manifest entry listing the keys of converted clips that are digital silence (only if any)."""

RESAMPLE_MANIFEST_KEY = "resample"
"""Manifest entry naming how audio was brought to ``sample_rate`` (``audio.RESAMPLE_METHODS``).

Written by every conversion; a manifest without it predates the option and was resampled with ``sinc``.
"""


def shard_key(key: str) -> str:
    """Tar member stem for a clip key: webdataset splits key/extension at the first ``.``."""
    return key.replace(".", "_").replace("/", "_").replace("\\", "_")


def parse_labels(data: bytes) -> tuple[int, ...]:
    """Class indices from a clip's ``.json`` member; ``ValueError`` says what is wrong."""
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    labels = record.get("labels") if isinstance(record, dict) else None
    if not isinstance(labels, list) or not all(isinstance(index, int) for index in labels):
        raise ValueError(f"expected {{'labels': [int, ...]}}, found {str(record)[:80]!r}")
    return tuple(labels)
