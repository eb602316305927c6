"""Shard sets as a stream: list shard URLs, split them, read tar members.

A shard set is a directory with ``manifest.json`` and ``shard-*.tar`` (docs/architecture.md; the
format and its manifest reader live in :mod:`panns_lightning.shardset`). Everything here is plain
functions and small classes; ``train_stream.py`` and ``eval_stream.py`` turn the stream into batches,
``shardset.codec`` turns an audio member's bytes into samples.

Tar members are read with :mod:`tarfile` in stream mode over a file object from webdataset's URL
opener (local paths, ``file:``, ``pipe:`` commands) or, for ``http(s)://``, from :mod:`.remote`
(HTTP errors by status, cut transfers detected and resumed). We do not use webdataset's
pipeline: its default node splitter refuses world_size > 1, its error handlers sleep, and its shard
shuffle repeats every epoch (webdataset 1.0.2, its open PR #502). Reading members ourselves also lets the labels-only
path skip audio bytes without reading them into memory.
"""

from __future__ import annotations

import heapq
import logging
import multiprocessing
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any

import numpy as np
from braceexpand import braceexpand
from torch.utils.data import get_worker_info
from webdataset.gopen import gopen

from panns_lightning.data.remote import (
    DEFAULT_HTTP,
    HttpOptions,
    RemoteReadError,
    fetch_http,
    is_http_url,
    join_url,
    open_http,
)
from panns_lightning.shardset import MANIFEST_NAME, Manifest, ShardSetError, parse_manifest, read_manifest
from panns_lightning.shardset.format import (
    AUDIO_MEMBER_EXTENSION,
    LABELS_MEMBER_EXTENSION,
    MAX_MEMBER_BYTES,
    parse_labels,
)

log = logging.getLogger(__name__)

# A pax header or GNU long name holds a member's name and a few fields; tarfile reads it whole.
MAX_TAR_HEADER_BYTES = 1 << 20
# Stream-mode tar reads in chunks of this size: the default 10 KB costs ~60 calls per 10 s int16
# clip; much larger chunks copy more on every 512-byte header read. 64 KB measured fastest.
_TAR_READ_SIZE = 1 << 16


class BadSampleError(RuntimeError):
    """A tar member or shard could not be read or decoded (raised only with ``fail_fast``)."""


class NoReadableClipsError(ShardSetError):
    """A stream found nothing it could use: every shard in a row, or every draw in a row, failed."""


# --------------------------------------------------------------------------- URLs


def load_manifest(location: str | Path, http: HttpOptions = DEFAULT_HTTP) -> Manifest:
    """The manifest of a shard set: a local directory, or an ``http(s)://`` URL of one (``URL/manifest.json``).

    Shards are not checked: a missing one counts against the error budget when it is read.
    """
    if not is_http_url(str(location)):
        return read_manifest(location, check_files=False, max_bytes=http.max_manifest_bytes)
    url = join_url(str(location), MANIFEST_NAME)
    try:
        text = fetch_http(url, http)
    except RemoteReadError as error:
        raise ShardSetError(f"cannot fetch {url}: {error}") from None
    return parse_manifest(text, url)


def shard_location(shard_dir: str | Path) -> str:
    """How to name a file of a shard set in messages: ``DIR/manifest.json`` or ``URL/manifest.json``."""
    if is_http_url(str(shard_dir)):
        return join_url(str(shard_dir), MANIFEST_NAME)
    return str(Path(shard_dir) / MANIFEST_NAME)


def shard_urls(shard_dir: str | Path, manifest: Manifest, urls: str | Sequence[str] | None = None) -> list[str]:
    """Where to read the shards from: the manifest's files in ``shard_dir``, or ``urls`` when given.

    ``shard_dir`` may be a local directory or an ``http(s)://`` URL of one. ``urls`` may be one
    string or a list; each is brace-expanded (``shard-{000000..000009}.tar``) and may be a path,
    ``file:``, ``pipe:CMD`` or ``http(s)://`` URL. Order is kept: it is the eval order.
    """
    if urls is None:
        if is_http_url(str(shard_dir)):
            return [join_url(str(shard_dir), shard.name) for shard in manifest.shards]
        return [str(Path(shard_dir) / shard.name) for shard in manifest.shards]
    patterns = [urls] if isinstance(urls, str) else list(urls)
    expanded = [url for pattern in patterns for url in braceexpand(pattern)]
    if not expanded:
        raise ShardSetError(f"shard URL override {urls!r} for {shard_dir} expands to no URLs")
    return expanded


# --------------------------------------------------------------------------- splitting


def train_shards_for_slot(
    num_shards: int,
    slot: int,
    num_slots: int,
    *,
    seed: int,
    pass_index: int,
    weights: Sequence[float] | None = None,
    class_counts: np.ndarray | None = None,
) -> list[int]:
    """Shard indices one reader slot (rank × worker) reads in one pass over the train set.

    One global permutation per (seed, pass) is split across slots, so within a pass slots read
    disjoint shards and every slot gets at least one; with fewer shards than slots, slots wrap
    around the permutation and share shards. Without ``weights`` slot s takes every num_slots-th
    shard. With ``weights`` (the copies a shard is expected to emit) slices are balanced by weight
    (:func:`weighted_slices`): every slot then needs the same number of draws to finish its slice,
    so all slots finish a pass together and no shard of a pass is left unread while others are
    read twice — that, not rounding, was what skewed rare classes' counts over a pass. With
    ``class_counts`` (shards × classes, from the manifest) the slot's slice is put in an order
    that reads every class at an even rate (:func:`even_class_order`).
    """
    rng = np.random.default_rng([seed, pass_index])
    order = rng.permutation(num_shards)
    if num_shards < num_slots:
        return [int(order[slot % num_shards])]
    if weights is None:
        return [int(index) for index in order[slot::num_slots]]
    weight_array = np.asarray(weights, dtype=np.float64)
    chosen = weighted_slices(order, weight_array, num_slots, rng)[slot]
    if class_counts is None:
        return chosen
    return even_class_order(chosen, weight_array, class_counts)


def even_class_order(shards: Sequence[int], weights: np.ndarray, class_counts: np.ndarray) -> list[int]:
    """Reorder a slot's shards so that every class's clips arrive at an even rate through the pass.

    A stream can only draw clips it has read: in a random order, after half a pass a rare class
    may have had a third or two thirds of its shards read, and its draw count swings with it.
    Greedy: at each step take the shard that keeps every class's fraction read closest (squared
    error, each class weighted alike) to the fraction of the pass's weight read. ``shards`` comes
    in a random order per pass, which breaks ties, so passes still differ.
    """
    if len(shards) <= 2:
        return list(shards)
    index = np.asarray(shards)
    counts = class_counts[index].astype(np.float64)
    present = counts.sum(axis=0) > 0
    fractions = counts[:, present] / counts[:, present].sum(axis=0)
    shard_weights = weights[index] / max(float(weights[index].sum()), 1e-12)
    # Σ_c (a_c + f_c − p)² expanded, so that a step costs one matrix-vector product:
    # Σa² − 2pΣa + C·p² + 2 f·a − 2p Σf + Σf², with a the fractions read, f a candidate's, p the progress.
    row_sums = fractions.sum(axis=1)
    row_squares = (fractions**2).sum(axis=1)
    num_classes = fractions.shape[1]
    remaining = np.ones(len(index), dtype=bool)
    read_fraction = np.zeros(num_classes)
    read_weight = 0.0
    ordered: list[int] = []
    for _ in range(len(index)):
        candidates = np.flatnonzero(remaining)
        progress = read_weight + shard_weights[candidates]
        total = read_fraction.sum()
        score = (
            read_fraction @ read_fraction
            - 2 * progress * total
            + num_classes * progress**2
            + 2 * (fractions[candidates] @ read_fraction)
            - 2 * progress * row_sums[candidates]
            + row_squares[candidates]
        )
        best = candidates[int(np.argmin(score))]
        remaining[best] = False
        read_fraction += fractions[best]
        read_weight += shard_weights[best]
        ordered.append(int(index[best]))
    return ordered


def weighted_slices(
    order: np.ndarray, weights: np.ndarray, num_slots: int, rng: np.random.Generator
) -> list[list[int]]:
    """Split shards into ``num_slots`` slices of near-equal total weight, each listed in ``order``.

    Greedy longest-processing-time on weights jittered by ±25 % (log-normal), so that slices
    change from pass to pass instead of pinning each slot to the same shards forever.
    """
    jittered = weights[order] * np.exp(0.25 * rng.standard_normal(len(order)))
    loads = [(0.0, 0, slot) for slot in range(num_slots)]  # (weight, shard count, slot): empty slots first
    heapq.heapify(loads)
    assigned: list[list[int]] = [[] for _ in range(num_slots)]
    for position in np.argsort(-jittered, kind="stable"):
        load, count, slot = heapq.heappop(loads)
        assigned[slot].append(int(position))
        heapq.heappush(loads, (load + float(weights[order[position]]), count + 1, slot))
    return [[int(order[position]) for position in sorted(positions)] for positions in assigned]


def train_shard_schedule(
    num_shards: int, slot: int, num_slots: int, *, seed: int, start: int = 0
) -> Iterator[tuple[int, int]]:
    """The endless (pass_index, shard_index) sequence of one slot: its pass slices one after another.

    ``start`` skips that many entries, so that an epoch can resume where the previous one stopped
    instead of re-permuting (which would read some shards every epoch and others rarely).
    """
    per_pass = len(train_shards_for_slot(num_shards, slot, num_slots, seed=seed, pass_index=0))
    pass_index, offset = divmod(start, per_pass)
    while True:
        shard_indices = train_shards_for_slot(num_shards, slot, num_slots, seed=seed, pass_index=pass_index)
        for shard_index in shard_indices[offset:]:
            yield pass_index, shard_index
        pass_index, offset = pass_index + 1, 0


def weighted_train_schedule(
    num_shards: int,
    slot: int,
    num_slots: int,
    *,
    seed: int,
    weights: Sequence[float],
    start: float = 0.0,
    class_counts: np.ndarray | None = None,
) -> Iterator[tuple[int, int, float]]:
    """Like :func:`train_shard_schedule` on weight-balanced slices, yielding (pass, shard, position).

    ``position`` is the cumulative shard weight of the slot's schedule before that shard; the first
    shard yielded is the one holding position ``start``, so a reader can skip its clips before it.
    """
    pass_index, position = 0, 0.0
    while True:
        shards = train_shards_for_slot(
            num_shards, slot, num_slots, seed=seed, pass_index=pass_index, weights=weights, class_counts=class_counts
        )
        for shard_index in shards:
            following = position + float(weights[shard_index])
            if following > start or (following == position and position >= start):
                yield pass_index, shard_index, position
            position = following
        if position <= 0:
            raise ValueError("weighted_train_schedule: every shard has weight 0")
        pass_index += 1


@dataclass(frozen=True)
class EvalShardShare:
    """One slot's share of one shard: keep the clips whose position ``i`` has ``i % stride == offset``."""

    shard_index: int
    stride: int
    offset: int


def eval_shares_for_slot(num_shards: int, slot: int, num_slots: int) -> list[EvalShardShare]:
    """What one slot reads for val/test so that all slots together see every clip exactly once.

    Shard-level split when there are at least as many shards as slots; otherwise slot ``s`` reads
    shard ``s % num_shards`` and the slots sharing a shard split it by clip position.
    """
    if num_shards >= num_slots:
        return [EvalShardShare(index, 1, 0) for index in range(slot, num_shards, num_slots)]
    shard_index = slot % num_shards
    sharing_slots = len(range(shard_index, num_slots, num_shards))
    return [EvalShardShare(shard_index, sharing_slots, slot // num_shards)]


# --------------------------------------------------------------------------- reading members


@dataclass(frozen=True)
class RawClip:
    """One clip as read from a shard: labels parsed, audio still encoded (or absent, labels-only)."""

    key: str
    shard: str
    labels: tuple[int, ...]
    audio: bytes | None


class SharedCount:
    """Integers visible to the main process and its DataLoader workers (fork or spawn).

    Each process writes only its own slot (slot 0: the main process, 1 + worker id: a worker), so
    no lock is needed; ``value`` is the sum. Lock-free raw shared memory also travels to workers
    started in any multiprocessing context, which a ``multiprocessing.Value`` lock does not.
    Copied any other way (deepcopy, pickle outside process start) it degrades to private ints.
    """

    _SLOTS = 65

    def __init__(self, value: int = 0) -> None:
        self._slots: Any = multiprocessing.RawArray("q", self._SLOTS)
        self._slots[0] = value

    @property
    def value(self) -> int:
        return int(sum(self._slots))

    @value.setter
    def value(self, new: int) -> None:
        """Set the total (meant for the main process, e.g. the epoch, while no worker runs)."""
        for slot in range(1, len(self._slots)):
            self._slots[slot] = 0
        self._slots[0] = new

    def add(self, amount: int = 1) -> None:
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (len(self._slots) - 1)
        self._slots[slot] += amount

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None:  # travelling to a new worker: share
            return {"_slots": self._slots}
        return {"_slots": list(self._slots)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._slots = state["_slots"]


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


def open_shard(url: str, http: HttpOptions = DEFAULT_HTTP) -> Any:
    """A binary stream over one shard: :mod:`.remote` for ``http(s)://``, webdataset's opener otherwise."""
    return open_http(url, http) if is_http_url(url) else gopen(url, "rb")


def read_shard(
    url: str,
    *,
    storage: str,
    with_audio: bool,
    errors: ErrorLog,
    http: HttpOptions = DEFAULT_HTTP,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> Iterator[RawClip]:
    """Yield the clips of one tar shard in stored order.

    A clip with unreadable labels or without its audio member is reported and skipped; a truncated
    or unreadable tar is reported and the rest of that shard is skipped, and so is a ``pipe:``
    command that exits non-zero after its last member (a download cut at a member boundary looks
    like a complete tar otherwise) and an HTTP download that fails for good (``http``: its
    timeout and retries). With ``with_audio=False`` audio members are stepped over without being read.
    A member over ``max_member_bytes`` is not read: its clip is reported and skipped.
    """
    audio_ext = AUDIO_MEMBER_EXTENSION[storage]
    current_key: str | None = None
    last_good_key: str | None = None
    members: dict[str, bytes | None] = {}
    oversized: str | None = None  # why the current clip cannot be used, from its member headers
    completed = False
    try:
        stream = open_shard(url, http)
    except RemoteReadError as exc:
        errors.shard(url, None, f"cannot open ({exc})")
        return
    except Exception as exc:  # noqa: BLE001 - any opener failure is a shard failure
        errors.shard(url, None, f"cannot open ({type(exc).__name__}: {exc})")
        return
    try:
        with tarfile.open(fileobj=stream, mode="r|*", bufsize=_TAR_READ_SIZE, tarinfo=_BoundedTarInfo) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_member_name(member.name)
                if key != current_key:
                    if current_key is not None:
                        clip = _assemble_clip(url, current_key, members, audio_ext, errors, oversized)
                        if clip is not None:
                            last_good_key = current_key
                            yield clip
                    current_key, members, oversized = key, {}, None
                if member.size > max_member_bytes:  # stepped over unread; the clip is reported once
                    oversized = f"member {_quote(member.name)} holds {member.size} bytes, over max_member_bytes={max_member_bytes}"
                elif ext == LABELS_MEMBER_EXTENSION or (with_audio and ext == audio_ext):
                    handle = tar.extractfile(member)
                    members[ext] = handle.read() if handle is not None else b""
                elif ext == audio_ext:
                    members[ext] = None  # present, deliberately not read
            if current_key is not None:
                clip = _assemble_clip(url, current_key, members, audio_ext, errors, oversized)
                if clip is not None:
                    last_good_key = current_key
                    yield clip
        completed = True
    except RemoteReadError as exc:
        errors.shard(url, last_good_key, f"download failed ({exc})")
    except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError) as exc:  # recursion: chained pax headers
        errors.shard(url, last_good_key, f"unreadable or truncated tar ({type(exc).__name__}: {exc})")
    finally:
        failure = _close_quietly(stream, url)
        if completed and failure is not None:
            errors.shard(url, last_good_key, f"reader failed after the last member ({failure})")


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended parts (pax records, GNU long names) are refused over
    :data:`MAX_TAR_HEADER_BYTES` before tarfile reads them whole into memory."""

    _EXTENDED = (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._EXTENDED and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.ReadError(
                f"an extended tar header of {self.size} bytes (over {MAX_TAR_HEADER_BYTES}) before {self.name[:100]!r}"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _split_member_name(name: str) -> tuple[str, str]:
    """``dir/KEY.ext.more`` → (``dir/KEY``, ``ext.more``): the first dot of the basename splits, as in webdataset."""
    directory, _, basename = name.rpartition("/")
    stem, _, ext = basename.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext


def _assemble_clip(
    url: str, key: str, members: dict[str, bytes | None], audio_ext: str, errors: ErrorLog, problem: str | None
) -> RawClip | None:
    if problem is not None:
        errors.sample(url, key, problem)
        return None
    if LABELS_MEMBER_EXTENSION not in members:
        errors.sample(url, key, "no .json member (labels)")
        return None
    if audio_ext not in members:
        errors.sample(url, key, f"no .{audio_ext} member (audio)")
        return None
    try:
        labels = parse_labels(members[LABELS_MEMBER_EXTENSION] or b"")
    except ValueError as exc:
        errors.sample(url, key, f"bad .json member: {exc}")
        return None
    return RawClip(key=key, shard=url, labels=labels, audio=members[audio_ext])


def _quote(text: str, width: int = 100) -> str:
    """``text``'s repr, cut to ``width``: a member name comes from the shard, so it may be anything."""
    quoted = repr(text)
    return quoted if len(quoted) <= width else quoted[: width - 3] + "..."


def _close_quietly(stream: Any, url: str) -> str | None:
    """Close; return what went wrong (e.g. a ``pipe:`` exit status) instead of raising.

    Only a shard read to its end treats that as an error: a ``pipe:`` command closed early (the
    epoch ended mid-shard) exits with SIGPIPE, which is not a data error.
    """
    try:
        stream.close()
    except Exception as exc:  # noqa: BLE001
        log.debug("closing %s: %s", url, exc)
        return f"{type(exc).__name__}: {exc}"
    return None
