"""Which files ``panns-tag`` reads: the paths given, with folders walked recursively by extension."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")
"""What a folder contributes (case-insensitive): the containers libsndfile decodes."""


def collect_inputs(paths: Iterable[Path], extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Files named, in the order given, and each folder's audio files (recursive, sorted, by extension).

    A file named explicitly is kept whatever its extension (its decoder will judge it); a path
    that appears twice is read once. Symbolic links to folders are not followed, so a link
    cycle cannot make the walk endless.
    """
    wanted = tuple(extension.lower() for extension in extensions)
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        members = _walk(path, wanted) if path.is_dir() else [path]
        for member in members:
            if member not in seen:
                seen.add(member)
                found.append(member)
    return found


def _walk(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    files = []
    for root, folders, names in os.walk(folder, followlinks=False):
        folders.sort()
        files.extend(Path(root) / name for name in names if name.lower().endswith(extensions))
    return sorted(files)
