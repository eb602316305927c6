"""The shard-set format: what a shard set on disk is, and the only code that reads or writes one.

A shard set is a directory of tar shards plus ``manifest.json`` (docs/architecture.md). This
package is the one home of that format, imported by the converters (``datasets/``, ``cli/prepare``)
and by the stream (``data/``), which do not import each other:

- :mod:`.format`: names, member layout, manifest entry names (``MANIFEST_NAME``, ``shard_key``);
- :mod:`.codec`: the one encoder and decoder of audio members (both storages, mono only);
- :mod:`.manifest`: the typed :class:`Manifest`, :func:`read_manifest` (the only reader) and
  :func:`write_manifest`;
- :mod:`.records`: what a dataset reader yields (:class:`ClipRecord`) and reports (:class:`SkippedClip`);
- :mod:`.folds`: cross-validation folds recorded in clips and manifest, and selecting a fold;
- :mod:`.writer`: :func:`write_shards`, the one shard writer (it decodes audio, so it is imported
  on demand: ``from panns_lightning.shardset.writer import write_shards``, or from here lazily);
- :mod:`.decode_pool`: the writer's worker processes, where a crashed or hung decoder costs one file.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from panns_lightning.shardset.format import FORMAT_VERSION, MANIFEST_NAME, shard_key
from panns_lightning.shardset.manifest import (
    Manifest,
    ManifestError,
    ShardInfo,
    ShardSetError,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

if TYPE_CHECKING:
    from panns_lightning.shardset.writer import NoUsableClipsError, OutputNotEmptyError, write_shards

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ClipRecord",
    "Manifest",
    "ManifestError",
    "NoUsableClipsError",
    "OutputNotEmptyError",
    "ReaderResult",
    "ShardInfo",
    "ShardSetError",
    "SkippedClip",
    "parse_manifest",
    "read_manifest",
    "shard_key",
    "write_manifest",
    "write_shards",
]

# The writer imports audio decoding (torchaudio, soundfile); the stream's DataLoader workers,
# which import this package for the manifest, should not pay for it.
_LAZY = {"write_shards", "NoUsableClipsError", "OutputNotEmptyError"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'panns_lightning.shardset' has no attribute {name!r}")
    return getattr(import_module("panns_lightning.shardset.writer"), name)
