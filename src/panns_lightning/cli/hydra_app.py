"""What every Hydra app of this project shares: where the config tree is, the resolvers its files
use, redaction, one error line.

The configs live in the repository's ``conf/`` (with ``conf/experiment`` → ``experiments/``),
not inside the package, so users edit them in place. An editable install finds them next to
``src/``; otherwise ``PANNS_CONFIG_DIR`` or ``./conf`` is used.

``${cpu_precision:}`` resolves to ``bf16-mixed`` on a CPU with native bf16 arithmetic
(``avx512_bf16`` or ``amx_bf16``: oneDNN's bf16 convolutions then run several times faster than
fp32) and to ``32-true`` elsewhere, where bf16 would be emulated and slower. ``make demo`` uses it;
``panns-train`` logs which it was.

:func:`run_app` is the one wrapper around an app's work: it redacts the job (saved configs, log
handlers) first and turns the errors a user can fix (config, data, checkpoint) into one line on
stderr naming the key or file, with secrets masked, instead of a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from panns_lightning.cli.entry import end_on_closed_pipe, one_line
from panns_lightning.redact import install_log_redaction, redact_run_dir_configs, redact_yaml_file

CONFIG_ENV = "PANNS_CONFIG_DIR"
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def native_bf16_flag(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU feature that makes bf16 native here (``amx_bf16``, ``avx512_bf16``), or None."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path(cpuinfo).read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:  # not Linux: no bf16 claim
        return None
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def cpu_precision() -> str:
    return "bf16-mixed" if native_bf16_flag() else "32-true"


if not OmegaConf.has_resolver("cpu_precision"):
    OmegaConf.register_new_resolver("cpu_precision", cpu_precision)

T = TypeVar("T")


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


def run_app(command: str, work: Callable[[], T]) -> T:
    """``work()`` inside a redacted Hydra job; an error a user can fix becomes ``SystemExit("command: message")``.

    The message is one line (whitespace folded) with secrets masked: what a user can fix (see
    :func:`user_errors`) is named, not buried in a traceback. Other exceptions (bugs) keep theirs
    (masked too: the apps' ``main`` runs in ``cli.entry.console_entry``). A reader that closed
    the pipe (``| head``) ends the job quietly.
    """
    redact_hydra_run()  # no secret stays in .hydra/*.yaml or reaches the job's log
    try:
        return work()
    except user_errors() as error:
        raise SystemExit(one_line(command, error)) from None
    except BrokenPipeError:
        raise SystemExit(end_on_closed_pipe()) from None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that name a config key, a file or the data: a wrong config or path, a checkpoint that
    does not fit or is unsafe, non-finite training or outputs, data over its error budget, a shard
    set that lacks what the run asks of it (a fold, a split) or holds nothing readable."""
    from panns_lightning.cli.config_schema import ConfigError
    from panns_lightning.data.datamodule import DataErrorBudgetExceeded
    from panns_lightning.models import NonFiniteOutputError
    from panns_lightning.models.checkpoint import CheckpointMismatchError
    from panns_lightning.shardset import ShardSetError
    from panns_lightning.training.numerics import NonFiniteTrainingError

    return (
        ConfigError,
        CheckpointMismatchError,
        NonFiniteTrainingError,
        NonFiniteOutputError,
        DataErrorBudgetExceeded,
        ShardSetError,
    )


def redact_hydra_run() -> None:
    """Inside a Hydra job: redact its log handlers and saved ``.hydra/*.yaml`` (and a sweep's
    ``multirun.yaml``). A no-op outside Hydra (e.g. ``train(cfg)`` called from tests)."""
    from hydra.core.hydra_config import HydraConfig

    install_log_redaction()
    if HydraConfig.initialized():
        redact_job_files(HydraConfig.get())


def redact_job_files(hydra_cfg: Any) -> None:
    """The files Hydra saved for this job (none on DDP child ranks: their output_subdir is null)."""
    from hydra.types import RunMode

    if hydra_cfg.output_subdir is not None:
        redact_run_dir_configs(hydra_cfg.runtime.output_dir, str(hydra_cfg.output_subdir))
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_file = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
        if sweep_file.is_file():
            redact_yaml_file(sweep_file)
