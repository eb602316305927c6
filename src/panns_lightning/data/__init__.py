"""Streaming shard sets into Lightning: balanced train stream, exactly-once val/test, inspection.

Exports resolve lazily so that a spawned DataLoader worker, which only needs ``sampling`` and
``stream``, does not pay for importing Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from panns_lightning.data.datamodule import AudioShardDataModule, StreamEpochCallback
    from panns_lightning.data.inspect import run_inspect

__all__ = ["AudioShardDataModule", "StreamEpochCallback", "run_inspect"]

_HOMES = {
    "AudioShardDataModule": "panns_lightning.data.datamodule",
    "StreamEpochCallback": "panns_lightning.data.datamodule",
    "run_inspect": "panns_lightning.data.inspect",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'panns_lightning.data' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
