"""How a shard set is streamed: the one list of the data group's options, their defaults and checks.

:class:`StreamOptions` is read by :class:`~panns_lightning.data.datamodule.AudioShardDataModule`
(its keyword arguments), by :class:`~panns_lightning.data.train_stream.TrainClipStream` and, as the
base of ``DataConfig``, by panns-train's config schema; ``conf/data/*.yaml`` sets their values
for a recipe. Plain Python (no torch): the config schema imports it. The limits on what a shard
set may cost (``http_deadline``, ``max_*_bytes``) are listed in docs/security.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from panns_lightning.data.remote import DEFAULT_DEADLINE, MAX_SHARD_BYTES, HttpOptions
from panns_lightning.shardset.format import MAX_MANIFEST_BYTES, MAX_MEMBER_BYTES

SAMPLERS = ("stream", "panns")
"""``data.sampler``: the balanced shard stream, or PANNs' sampler exactly by random access."""


@dataclass
class StreamOptions:
    """The stream's options (not frozen: OmegaConf builds the config schema from this class).

    Attributes:
        sampler: ``stream`` reads shards in sequence and balances with repeat factors (any
            storage, ``pipe:`` included); ``panns`` draws PANNs' balanced sampler exactly, one
            global sequence over all ranks, reading each drawn clip by random access through the
            clip index (local files or http(s) with Range; not ``pipe:``). docs/balanced_streaming.md
            says when each is right.
        batch_size: clips per batch (with mixup, pairs of them make one mixed example).
        num_workers: DataLoader worker processes per rank.
        balanced: class-balanced train stream (repeat factors, PANNs-like); false: every clip once per pass.
        steps_per_epoch: train batches per epoch and rank (the train stream is endless).
        repeat_scale: mean copies per clip read in the balanced stream (ρ).
        shuffle_buffer: copies held drawable per worker (bounded-delay shuffle).
        repeat_spread: a clip's copies are spread over at least this many draws, never closer than
            one batch (None: ``shuffle_buffer``).
        stratify_batches: balanced stream only: draw the buffered copies class by class from a
            shuffled queue of classes, as PANNs' sampler does, so that consecutive draws carry
            different classes (nearly every class in every batch when classes < batch_size);
            false: in order of due position plus jitter. The copies drawn are the same (up to
            what is still buffered at an epoch's end); docs/balanced_streaming.md has the A/B.
        seed: seeds the stream (per rank, worker and epoch).
        fail_fast: raise at the first unreadable clip or shard instead of logging and skipping it.
        error_budget: stop when more than this fraction of the clips met so far could not be used
            (train, or a validation), counting the clips a broken or missing shard should have held.
        error_budget_min_clips: the fraction is taken over at least this many clips.
        http_timeout: seconds an ``http(s)://`` shard or manifest may take to connect or to send
            more data before the read counts as failed (then retried).
        http_retries: retries of a failed or cut HTTP read (resumed where it stopped; waits of 1, 2,
            4, ... s); a 4xx error other than 408/429 is not retried.
        http_deadline: seconds one ``http(s)://`` request (a manifest or a shard, its retries
            included) may take in all; a server trickling bytes is given up then.
        max_manifest_bytes: a ``manifest.json`` (local or fetched) larger than this is not read.
        max_member_bytes: a tar member larger than this is not read (its clip is skipped).
        max_shard_bytes: an ``http(s)://`` shard that sends more than this is given up.
    """

    sampler: str = "stream"
    batch_size: int = 32
    num_workers: int = 2
    balanced: bool = True
    steps_per_epoch: int = 1000
    repeat_scale: float = 1.0
    shuffle_buffer: int = 2000
    repeat_spread: Optional[int] = None
    stratify_batches: bool = True
    seed: int = 1234
    fail_fast: bool = False
    error_budget: float = 0.01
    error_budget_min_clips: int = 500
    http_timeout: float = 60.0
    http_retries: int = 3
    http_deadline: float = DEFAULT_DEADLINE
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_shard_bytes: int = MAX_SHARD_BYTES

    def __post_init__(self) -> None:
        for problem in self.problems():
            raise ValueError(problem)
        self.error_budget_min_clips = max(1, int(self.error_budget_min_clips))

    def problems(self) -> list[str]:
        """What is wrong with these values, one line per option naming it (empty: nothing); ``__post_init__`` raises the first."""
        found = []
        if self.sampler not in SAMPLERS:
            found.append(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        elif self.sampler == "panns" and not self.balanced:
            found.append("sampler=panns is PANNs' balanced sampler: it needs balanced=true (or use sampler=stream)")
        positive = ("batch_size", "steps_per_epoch", "shuffle_buffer", "max_manifest_bytes", "max_member_bytes")
        for name in (*positive, "max_shard_bytes"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.repeat_spread is not None and self.repeat_spread < 1:
            found.append(f"repeat_spread must be >= 1 or null, got {self.repeat_spread}")
        for name in ("repeat_scale", "http_timeout", "http_deadline"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                found.append(f"{name} must be a finite number > 0, got {value}")
        for name in ("num_workers", "http_retries", "error_budget_min_clips"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.error_budget <= 1.0:  # NaN fails too
            found.append(f"error_budget is a fraction of clips in [0, 1], got {self.error_budget}")
        return found

    def http_options(self) -> HttpOptions:
        """How this stream reads ``http(s)://`` manifests and shards."""
        return HttpOptions(
            timeout=self.http_timeout,
            retries=self.http_retries,
            deadline=self.http_deadline,
            max_manifest_bytes=self.max_manifest_bytes,
            max_shard_bytes=self.max_shard_bytes,
        )

    @property
    def copy_spread(self) -> int:
        """``repeat_spread``, or ``shuffle_buffer`` when it is not set."""
        return self.shuffle_buffer if self.repeat_spread is None else self.repeat_spread


def random_access_problem(urls: object) -> str | None:
    """Why shards at ``urls`` (a ``data.*_urls`` value) cannot be read at random, or None when they can."""
    patterns = [urls] if isinstance(urls, str) else list(urls or [])  # type: ignore[call-overload]
    for url in patterns:
        if str(url).startswith("pipe:"):
            return (
                f"data.sampler=panns reads clips at random, which a pipe: command ({str(url)[:60]!r}) cannot do; "
                "copy the shards to a local disk or serve them over http(s) (Range requests), or use data.sampler=stream"
            )
    return None
