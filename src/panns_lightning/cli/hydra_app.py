"""Locating the Hydra config tree for the console scripts, and the resolvers its files use.

The configs live in the repository's ``conf/`` (with ``conf/experiment`` → ``experiments/``),
not inside the package, so users edit them in place. An editable install finds them next to
``src/``; otherwise ``PANNS_CONFIG_DIR`` or ``./conf`` is used.

``${cpu_precision:}`` resolves to ``bf16-mixed`` on a CPU with native bf16 arithmetic
(``avx512_bf16`` or ``amx_bf16``: oneDNN's bf16 convolutions then run several times faster than
fp32) and to ``32-true`` elsewhere, where bf16 would be emulated and slower. The CPU recipes use it
(``make demo``); ``panns-train`` logs which it was.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_ENV = "PANNS_CONFIG_DIR"
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def native_bf16_flag(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU feature that makes bf16 native here (``amx_bf16``, ``avx512_bf16``), or None."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path(cpuinfo).read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:  # not Linux: no bf16 claim
        return None
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def cpu_precision() -> str:
    return "bf16-mixed" if native_bf16_flag() else "32-true"


if not OmegaConf.has_resolver("cpu_precision"):
    OmegaConf.register_new_resolver("cpu_precision", cpu_precision)


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
