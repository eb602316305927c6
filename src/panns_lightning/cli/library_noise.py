"""The one place where known-harmless messages of the libraries we run on are silenced.

A console that prints the same irrelevant lines at every start teaches people to skip the lines that
matter. Each filter below names the message, where it comes from and why it is harmless here; a
filter is removed when its cause is gone (a library release that fixes it). Everything else still
prints. ``silence_known_harmless()`` is called by every console script before it does any work
(``cli.entry.console_entry``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownMessage:
    """A message (regex, matched at its start) that is harmless for the reason given."""

    pattern: str
    source: str
    reason: str


# Python warnings (warnings.filterwarnings: matched against the start of the message).
WARNINGS = (
    KnownMessage(
        pattern=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        source="torch.utils._pytree, called by Lightning 2.6's own _pytree helper",
        reason="a deprecation inside Lightning, not in our code; nothing a user can change",
    ),
    KnownMessage(
        pattern=r"The `srun` command is available on your system but is not used",
        source="Lightning's SLURMEnvironment, whenever an srun binary is on PATH",
        reason=(
            "our SLURM path is hydra/launcher=slurm (submitit), which starts every rank itself; on a login "
            "node or in a test cluster the hint is wrong"
        ),
    ),
)

# Log records (a logging.Filter on the named logger: matched against the start of the message).
LOG_RECORDS = {
    "lightning.pytorch.utilities.rank_zero": (
        KnownMessage(
            pattern="💡 Tip: For seamless cloud logging",
            source="Lightning's logger connector, at every Trainer start",
            reason="an advertisement for a hosted service, printed whatever loggers are configured",
        ),
    ),
}


class _DropKnown(logging.Filter):
    def __init__(self, messages: tuple[KnownMessage, ...]) -> None:
        super().__init__()
        self.prefixes = tuple(m.pattern for m in messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def silence_known_harmless() -> None:
    """Install the filters (idempotent: safe to call from every entry point and in tests)."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message.pattern)
    for logger_name, messages in LOG_RECORDS.items():
        logger = logging.getLogger(logger_name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(messages))
