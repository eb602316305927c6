"""The shard-set format (format_version 1): names, member layout and manifest entries.

What a shard set on disk is, in constants and two small functions; ``docs/architecture.md``
("Shard set on disk") is the prose version. The writer (:mod:`.writer`), the manifest reader
(:mod:`.manifest`) and the stream's tar reader (``panns_lightning.data.tar_reader``) all take these facts from
here. Plain Python: importing this module costs nothing.
"""

from __future__ import annotations

import json
import re

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

SHARD_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}")
"""What a manifest may name a shard: a plain file name inside its set. No scheme (``pipe:``,
``http:``, ``file:``), no separator, no ``..``, nothing a URL would read as a query or escape."""
MAX_MANIFEST_BYTES = 64 * 2**20
"""Default cap on a manifest's size (``data.max_manifest_bytes``): AudioSet's 2 M clips need ~3 MB."""
MAX_MEMBER_BYTES = 64 * 2**20
"""Default cap on one tar member (``data.max_member_bytes``): a 10 s clip at 32 kHz is 640 kB."""
MAX_SAMPLE_RATE = 384_000
"""The highest ``sample_rate`` a manifest may claim (studio audio tops out there)."""
MAX_CLIP_SECONDS = 600
"""The longest clip a manifest may claim: a batch holds ``batch_size x clip_samples`` floats."""

SILENT_MANIFEST_KEY = "silent_clips"
"""Manifest entry listing the keys of converted clips that are digital silence (only if any)."""

RESAMPLE_MANIFEST_KEY = "resample"
"""Manifest entry naming how audio was brought to ``sample_rate`` (``audio.RESAMPLE_METHODS``).

Written by every conversion; a manifest without it predates the option and was resampled with ``sinc``.
"""


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]*")
_ESCAPED = frozenset("./\\%")
_ESCAPE = re.compile(r"%(?:u([0-9A-F]{4})|U([0-9A-F]{8})|([0-9A-F]{2}))")


def shard_key(key: str) -> str:
    """Tar member stem for a clip key: injective, so two distinct keys never share a member.

    webdataset 1.0 splits a member name into key and extension at the first ``.`` after the
    last ``/`` (``base_plus_ext``), so ``.``, ``/`` and ``\\`` are escaped, and so are ``%`` (the
    escape character) and anything unprintable (control characters, lone surrogates from
    undecodable file names): ``%2E`` ``%2F`` ``%5C`` ``%25``, ``%uXXXX`` above U+00FF. Everything
    else is kept, so a YouTube id (``[A-Za-z0-9_-]``) is its own member name and a path stays
    readable: ``dogs/a.wav`` → ``dogs%2Fa%2Ewav``. :func:`clip_id` reverses it. Sets written
    before keys were escaped (``.`` and ``/`` became ``_``) read as before: no reader decodes
    member names.
    """
    if _PLAIN_KEY.fullmatch(key):
        return key
    return "".join(_escape(char) if char in _ESCAPED or not char.isprintable() else char for char in key)


def clip_id(member: str) -> str:
    """The clip key a member stem was made from (the inverse of :func:`shard_key`)."""

    def unescape(match: re.Match[str]) -> str:
        return chr(int(next(group for group in match.groups() if group is not None), 16))

    return _ESCAPE.sub(unescape, member)


def _escape(char: str) -> str:
    code = ord(char)
    return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}" if code < 0x10000 else f"%U{code:08X}"


def shard_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a shard of a set (:data:`SHARD_NAME_PATTERN`), or None when it can.

    A manifest comes with the data, from whoever made the set: its names must never choose a
    command, a scheme or a file outside the set's directory (or URL).
    """
    if not isinstance(name, str):
        return f"must be a string, found {type(name).__name__}"
    if SHARD_NAME_PATTERN.fullmatch(name) is None:
        return (
            f"{name[:100]!r} is not a plain file name inside the set (expected 1-255 letters, digits, "
            "'_', '.', '+' or '-', starting with a letter, digit or '_': no scheme, separator or '..')"
        )
    return None


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
