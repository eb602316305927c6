"""Streaming shard sets into Lightning: balanced train stream, exactly-once val/test.

One module per job: ``shard_urls`` (where a set's manifest and shards are), ``shard_schedule``
(which shards each rank × worker reads), ``tar_reader`` (a shard's clips, audio still encoded:
``shardset.codec`` decodes it), ``error_log`` and ``shared_count`` (what could not be used,
counted across workers), ``remote`` and ``deadline`` (HTTP(S) reads with retries, a deadline, size caps),
``spec`` (what a stream reads, who reads it), ``options`` (the stream options), ``repeats``
(repeat factors and due positions), ``buffer`` (the shuffle buffer), ``train_stream``,
``eval_stream``, ``datamodule`` (the LightningDataModule and its callbacks). ``diagnostics/``
measures the sampler (inspect, balance figures, PANNs' reference sampler, the AudioSet-scale
simulation); training never imports it.

Exports resolve lazily so that a spawned DataLoader worker, which only needs the streams, does
not pay for importing Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from panns_lightning.data.datamodule import AudioShardDataModule, StreamEpochCallback
    from panns_lightning.data.diagnostics.inspect import run_inspect

__all__ = ["AudioShardDataModule", "StreamEpochCallback", "run_inspect"]

_HOMES = {
    "AudioShardDataModule": "panns_lightning.data.datamodule",
    "StreamEpochCallback": "panns_lightning.data.datamodule",
    "run_inspect": "panns_lightning.data.diagnostics.inspect",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'panns_lightning.data' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
