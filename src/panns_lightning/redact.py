"""Mask secrets before they reach logs, saved run configs or checkpoints.

Shard URLs (``data.*_urls``) may carry credentials: a presigned ``?X-Amz-Signature=...``, a
``?token=...``, ``https://user:password@host`` or a ``pipe:curl -H "Authorization: Bearer ..."``
command; the wandb key lives in ``WANDB_API_KEY``. Hydra saves every override in the run
directory, loggers and checkpoints store hyper-parameters, and log lines quote configs and
URLs. Everything here replaces the secret *value* with :data:`MASK` and keeps the rest (host,
path, parameter names), so a redacted line still says which resource was used.

- :func:`redact` masks secrets in free text; :func:`redact_config` in nested dicts/lists/strings
  (values of secret-named keys are masked whole);
- :func:`redact_run_dir_configs` rewrites Hydra's ``.hydra/*.yaml`` of a run in place;
- :class:`RedactingFilter` / :func:`install_log_redaction` mask log records;
- :func:`redact_hparams` masks what ``save_hyperparameters`` stored;
- :func:`redacted_console` masks everything written to ``sys.stdout`` and ``sys.stderr`` (every
  console script runs inside it, ``cli/entry.py``): exception messages, tracebacks, Hydra's
  ``Error executing job with overrides:`` echo, progress bars, ``print``.

No Hydra here: the Hydra side (a job's saved ``.hydra/*.yaml`` and log handlers) is
``panns_lightning.cli.hydra_app.redact_hydra_run`` and the Hydra callback
``panns_lightning.cli.hydra_callbacks.RedactionCallback``, which call these functions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from panns_lightning.atomic import atomic_write

MASK = "<redacted>"
"""Not ``***``: YAML reads a leading ``*`` as an alias, and saved configs must stay loadable."""
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
# Environment values shorter than this are not masked as literals ("1", "true" would mask everything).
MIN_ENV_SECRET_LENGTH = 6

# URL query parameters whose value is a credential (presigned S3/GCS URLs, API tokens).
_SECRET_QUERY_NAME = re.compile(r"token|key|secret|sig|password|passw|credential|auth|^x-amz-|^x-goog-", re.I)
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s?;'\"]+)=(?P<value>[^&#\s'\";]*)")
# scheme://user:password@host
_USERINFO = re.compile(r"(?P<lead>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@?#'\"]*:)(?P<value>[^/\s@?#'\"]+)(?=@)")
# Authorization: Bearer xyz / Authorization=Basic abc / "Authorization: xyz"
_AUTH_HEADER = re.compile(
    r"(?P<lead>\bAuthorization['\"]?\s*[:=]\s*['\"]?(?:(?:Bearer|Basic|Token|Digest|Bot)\s+)?)(?P<value>[^\s'\",;]+)",
    re.I,
)
_BEARER = re.compile(r"(?P<lead>\bBearer\s+)(?P<value>[A-Za-z0-9\-._~+/]+=*)")
# A secret-named key or variable and its value: WANDB_API_KEY=..., api_key: ..., "password": "...",
# X-Api-Key: ..., client_secret=... (the name must *end* in the secret word: token_count is no secret).
_SECRET_WORD = r"(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|token|password|passwd|credentials?)"
_SECRET_NAME = re.compile(rf"^[\w.-]*{_SECRET_WORD}$", re.I)
_ASSIGNMENT = re.compile(rf"(?P<lead>\b[\w.-]*{_SECRET_WORD}['\"]?\s*[:=]\s*['\"]?)(?P<value>[^\s'\",;&}}\]]+)", re.I)
# Command-line flags: --token abc, --api-key=abc, curl -u user:password / --user user:password.
_FLAG = re.compile(rf"(?P<lead>--[\w-]*{_SECRET_WORD}(?:=|\s+)['\"]?)(?P<value>[^\s'\"]+)", re.I)
_CURL_USER = re.compile(r"(?P<lead>(?:\s-u\s*|--user[=\s]+)['\"]?[^\s:'\"]+:)(?P<value>[^\s'\"]+)")
_SECRET_ENV_NAME = re.compile(r"(?:^|_)(?:TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)$|(?:^|_)SECRET", re.I)
_INTERPOLATION = re.compile(r"^\$\{[^}]*\}$")


def redact(text: str) -> str:
    """``text`` with every credential value replaced by :data:`MASK` (idempotent)."""
    if not text:
        return text
    text = _mask_env_values(text)
    text = _QUERY_PARAM.sub(_mask_query_value, text)
    for pattern in (_USERINFO, _AUTH_HEADER, _BEARER, _ASSIGNMENT, _FLAG, _CURL_USER):
        text = pattern.sub(_mask_value, text)
    return text


def redact_config(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, strings; OmegaConf containers become plain ones) with
    secrets masked: whole values of secret-named keys, and secrets inside every string."""
    if _is_omegaconf(obj):
        from omegaconf import OmegaConf

        obj = OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, Mapping):
        return {key: _redact_entry(key, value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [redact_config(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact_config(item) for item in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj


def redact_hparams(module: Any) -> None:
    """Mask secrets in what ``save_hyperparameters`` stored, before loggers or checkpoints read it.

    Call right after ``self.save_hyperparameters()`` in a LightningModule/DataModule ``__init__``;
    the object keeps using its own attributes (e.g. the real URLs), only the recorded copy changes.
    """
    for attribute in ("_hparams", "_hparams_initial"):
        stored = getattr(module, attribute, None)
        if isinstance(stored, dict) and stored:
            cleaned = redact_config(dict(stored))
            stored.clear()
            stored.update(cleaned)


def redact_yaml_file(path: str | os.PathLike[str]) -> bool:
    """Rewrite a YAML file with its secrets masked (temp file + rename); True if anything changed.

    Files without secrets are left byte-for-byte untouched.
    """
    path = Path(path)
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    cleaned = redact_config(content)
    if cleaned == content:
        return False
    atomic_write(path, yaml.safe_dump(cleaned, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return True


def redact_run_dir_configs(run_dir: str | os.PathLike[str], subdir: str = ".hydra") -> list[Path]:
    """Redact Hydra's ``config.yaml``, ``overrides.yaml`` and ``hydra.yaml`` of a run; returns the rewritten files."""
    folder = Path(run_dir) / subdir
    return [folder / name for name in HYDRA_FILES if (folder / name).is_file() and redact_yaml_file(folder / name)]


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message (after %-formatting), traceback and stack text.

    Attach it to *handlers* (:func:`install_log_redaction`): a logger's own filters do not see the
    records its children propagate to it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(loggers: Iterable[logging.Logger] | None = None) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of ``loggers`` (default: root and all
    configured loggers); idempotent. Call again after logging is reconfigured (Hydra does so per job)."""
    shared = RedactingFilter()
    if loggers is None:
        known = [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
        loggers = [logging.getLogger(), *known]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
                handler.addFilter(shared)
    return shared


class RedactingStream:
    """A text stream that writes what it is given to ``target`` with secrets masked.

    Text is held until a line ends (``\n`` or ``\r``, as progress bars redraw) or the stream is
    flushed, so a secret written in pieces (``print`` writes its arguments one by one) is masked
    whole. Everything else (``fileno``, ``isatty``, ``encoding``, ...) is the target's.
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        end = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if end >= 0:
            done, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
            self.target.write(redact(done))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self.target.write(redact(pending))
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@contextlib.contextmanager
def redacted_console() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` masked (:class:`RedactingStream`) inside the block; nests."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more can be written anyway
                stream.flush()
        sys.stdout, sys.stderr = saved


# ---- helpers ------------------------------------------------------------------------------------
def _mask_value(match: re.Match[str]) -> str:
    return match.group("lead") + MASK


def _mask_query_value(match: re.Match[str]) -> str:
    if not match.group("value") or not _SECRET_QUERY_NAME.search(match.group("name")):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def _mask_env_values(text: str) -> str:
    values = tuple(
        sorted(
            {
                value
                for name, value in os.environ.items()
                if _SECRET_ENV_NAME.search(name) and len(value) >= MIN_ENV_SECRET_LENGTH
            },
            key=len,
            reverse=True,
        )
    )
    if not values:
        return text
    return _literal_pattern(values).sub(MASK, text)


@functools.lru_cache(maxsize=8)
def _literal_pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(value) for value in values))


def _redact_entry(key: Any, value: Any) -> Any:
    secret_key = isinstance(key, str) and _SECRET_NAME.match(key)
    if secret_key and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if value == "" or (isinstance(value, str) and _INTERPOLATION.match(value)):
            return value  # empty, or a reference such as ${oc.env:WANDB_API_KEY}: no secret in it
        return MASK
    return redact_config(value)


def _is_omegaconf(obj: Any) -> bool:
    return type(obj).__module__.startswith("omegaconf")
