"""Where the real AudioSet files of ../shared live (never committed; tests skip without them).

CI lays shared/ beside the clone; PANNS_SHARED_AUDIOSET points elsewhere if needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_audioset_dir() -> Path:
    if os.environ.get("PANNS_SHARED_AUDIOSET"):
        return Path(os.environ["PANNS_SHARED_AUDIOSET"])
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset"


SHARED_AUDIOSET = shared_audioset_dir()
