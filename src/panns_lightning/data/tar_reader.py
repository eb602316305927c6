"""Read the clips of one tar shard: labels parsed, audio left encoded (``shardset.codec`` decodes it).

Tar members are read with :mod:`tarfile` in stream mode over a file object from webdataset's URL
opener (local paths, ``file:``, ``pipe:`` commands) or, for ``http(s)://``, from :mod:`.remote`
(HTTP errors by status, cut transfers detected and resumed). We do not use webdataset's
pipeline: its default node splitter refuses world_size > 1, its error handlers sleep, and its shard
shuffle repeats every epoch (webdataset 1.0.2, its open PR #502). Reading members ourselves also
lets the labels-only path skip audio bytes without reading them into memory, and caps what a
shard may make us read (``max_member_bytes``, :data:`MAX_TAR_HEADER_BYTES`).
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from webdataset.gopen import gopen

from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.remote import DEFAULT_HTTP, HttpOptions, RemoteReadError, is_http_url, open_http
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


@dataclass(frozen=True)
class RawClip:
    """One clip as read from a shard: labels parsed, audio still encoded (or absent, labels-only)."""

    key: str
    shard: str
    labels: tuple[int, ...]
    audio: bytes | None


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
