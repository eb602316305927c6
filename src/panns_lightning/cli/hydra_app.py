"""Locating the Hydra config tree for the console scripts.

The configs live in the repository's ``conf/`` (with ``conf/experiment`` → ``experiments/``),
not inside the package, so users edit them in place. An editable install finds them next to
``src/``; otherwise ``PANNS_CONFIG_DIR`` or ``./conf`` is used.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "PANNS_CONFIG_DIR"


def find_config_dir() -> str:
    candidates: list[Path] = []
    if os.environ.get(CONFIG_ENV):
        candidates.append(Path(os.environ[CONFIG_ENV]))
    candidates.append(Path(__file__).resolve().parents[3] / "conf")  # repo/src/panns_lightning/cli
    candidates.append(Path.cwd() / "conf")
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return str(candidate.resolve())
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"panns_lightning: no Hydra config tree found (looked for train.yaml in: {tried}); "
        f"run from the repository root or set {CONFIG_ENV}=/path/to/panns_lightning/conf"
    )
