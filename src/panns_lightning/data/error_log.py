"""What a stream could not use: unreadable clips and shards, counted across workers and logged.

The counts feed the error budget (``datamodule.DataErrorBudget``); ``fail_fast`` turns the first
report into an exception instead.
"""

from __future__ import annotations

import logging
from typing import Any

from panns_lightning.data.shared_count import SharedCount
from panns_lightning.shardset import ShardSetError

log = logging.getLogger(__name__)


class BadSampleError(RuntimeError):
    """A tar member or shard could not be read or decoded (raised only with ``fail_fast``)."""


class NoReadableClipsError(ShardSetError):
    """A stream found nothing it could use: every shard in a row, or every draw in a row, failed."""


class ErrorLog:
    """Counts and logs unreadable samples and shards instead of sleeping (webdataset's handlers do).

    ``fail_fast`` turns every report into a :class:`BadSampleError`. Counts are events: a bad
    clip or shard is counted each time it is read (once per pass in training). For the error
    budget (:class:`~panns_lightning.data.datamodule.DataErrorBudget`) it also counts the clips
    read and the clips a broken shard should have held but did not yield (``lost``, known when
    the manifest gives per-shard counts).
    """

    def __init__(self, split: str, fail_fast: bool = False) -> None:
        self.split = split
        self.fail_fast = fail_fast
        self.bad_samples = SharedCount()
        self.bad_shards = SharedCount()
        self.read_samples = SharedCount()
        self.lost_samples = SharedCount()
        self.failed_urls: set[str] = set()  # this process's broken shards (not shared)

    def sample(self, shard: str, key: str, problem: str) -> None:
        message = f"{self.split}: skipped clip {key!r} in {shard}: {problem}"
        if self.fail_fast:
            raise BadSampleError(message)
        self.bad_samples.add()
        log.warning(message)

    def shard(self, shard: str, after_key: str | None, problem: str) -> None:
        where = f"after clip {after_key!r}" if after_key else "before its first clip"
        message = f"{self.split}: stopped reading {shard} {where}: {problem}"
        if self.fail_fast:
            raise BadSampleError(message)
        self.bad_shards.add()
        self.failed_urls.add(shard)
        log.warning(message)

    def counts(self) -> dict[str, int]:
        return {"bad_samples": self.bad_samples.value, "bad_shards": self.bad_shards.value}

    def budget_counts(self) -> dict[str, int]:
        """``counts()`` plus clips read and clips lost in broken shards."""
        return {**self.counts(), "read_samples": self.read_samples.value, "lost_samples": self.lost_samples.value}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "failed_urls": set()}
