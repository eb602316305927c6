"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file this project writes for others to read (shards and their manifest, checkpoints,
metrics.json, redacted Hydra configs, a truncated CSV log) goes through :func:`atomic_open`: the
content is written to a temporary file in the same directory, flushed and fsynced, then renamed
over the target (``os.replace``, atomic on POSIX), and the directory is fsynced so that the
rename survives a power cut. If anything fails, the temporary file is removed and the target is
left as it was. No dependency beyond the standard library: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: setting the umask to read it is not thread-safe.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    temp_path: str | os.PathLike[str] | None = None,
    **open_options: Any,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (``open_options`` such as ``encoding`` or ``newline`` go to
    :func:`open`). The temporary file is ``temp_path`` when given (a name other tools know, e.g.
    ``shard-000000.tar.tmp``), else a unique hidden ``.NAME.XXXX.tmp`` beside ``path``. The new
    file gets the mode of the file it replaces, or the process default (umask) for a new one.
    An exception inside the block removes the temporary file and leaves ``path`` untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    if temp_path is None:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        os.close(handle)
        temporary = Path(name)
    else:
        temporary = Path(temp_path)
    try:
        with open(temporary, mode, **open_options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _file_mode(target))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically (:func:`atomic_open`)."""
    if isinstance(data, str):
        with atomic_open(path, "w", encoding=encoding) as stream:
            stream.write(data)
    else:
        with atomic_open(path, "wb") as stream:
            stream.write(data)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make renames in ``directory`` durable (after a power cut, not just a kill); best effort."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _file_mode(target: Path) -> int:
    """The mode of the file being replaced, else what ``open()`` would give a new file."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK
