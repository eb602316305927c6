"""Secrets never reach logs, saved Hydra configs or recorded hyper-parameters (panns_lightning.redact)."""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import panns_lightning.cli.hydra_app as hydra_app
import panns_lightning.cli.hydra_callbacks as hydra_callbacks
from panns_lightning.cli.hydra_callbacks import RedactionCallback
from panns_lightning.redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_config,
    redact_hparams,
    redact_run_dir_configs,
)

SECRETS = ["abc123tok", "AKIAEXAMPLE", "deadbeefsig", "hunter2pw", "xyz.bearer-tok", "wandbkey0123456789"]


@pytest.mark.parametrize(
    "text, kept",
    [
        ("https://host/shard-{000..009}.tar?token=abc123tok", "https://host/shard-{000..009}.tar?token="),
        (
            "https://b.s3.amazonaws.com/a.tar?X-Amz-Credential=AKIAEXAMPLE%2F2024&X-Amz-Signature=deadbeefsig&part=1",
            "&part=1",
        ),
        ("https://alice:hunter2pw@host:8080/a-{0..3}.tar", "https://alice:"),
        ('pipe:curl -s -H "Authorization: Bearer xyz.bearer-tok" https://h/a.tar', "Authorization: Bearer "),
        ("pipe:curl -s -H 'Authorization: Basic hunter2pw' https://h/a.tar", "Authorization: Basic "),
        ("Bearer xyz.bearer-tok", "Bearer "),
        ("WANDB_API_KEY=wandbkey0123456789 wandb sync", "WANDB_API_KEY="),
        ("logger:\n  wandb:\n    api_key: wandbkey0123456789\n", "api_key: "),
        ("{'password': 'hunter2pw', \"client_secret\": \"abc123tok\"}", "'password': '"),
        ("pipe:curl -u alice:hunter2pw --token abc123tok https://h", "curl -u alice:"),
        ("pipe:curl -H 'X-Api-Key: abc123tok' https://h", "X-Api-Key: "),
    ],
)
def test_secret_values_are_masked_and_the_rest_is_kept(text: str, kept: str) -> None:
    redacted = redact(text)
    assert not any(secret in redacted for secret in SECRETS), redacted
    assert kept in redacted and MASK in redacted
    assert redact(redacted) == redacted  # idempotent: safe to apply at several layers


@pytest.mark.parametrize(
    "text",
    [
        "https://host/shards/train-{000000..000009}.tar",
        "data/audioset/shards/eval?part=1&page=2",
        "token_count: 5\nmonitor: val/mAP\nkey: 3",
        "https://host:8080/path@v2",
        "pipe:cat data/shards/a.tar",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_values_of_secret_environment_variables_are_masked_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_literal_value_42")
    monkeypatch.setenv("MY_SERVICE_SECRET_VALUE", "svc-s3cr3t-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("SOME_TOKEN", "1")  # too short to mask literally: would mask every "1"
    text = "read hf_literal_value_42 then svc-s3cr3t-value and wJalrXUtnFEMI/K7MDENG, step 1"
    assert redact(text) == f"read {MASK} then {MASK} and {MASK}, step 1"


def test_redact_config_masks_secret_keys_and_strings_recursively() -> None:
    config = {
        "data": {"train_urls": "https://h/a-{0..9}.tar?sig=deadbeefsig", "batch_size": 32, "balanced": True},
        "logger": {"wandb": {"api_key": "wandbkey0123456789", "project": "panns"}},
        "tokens": ["Bearer xyz.bearer-tok", ("password=hunter2pw",)],
        "pin_secret": 123456,
        "hf_token": "${oc.env:HF_TOKEN}",  # a reference, not a secret: kept so the config still resolves
        "password": None,
    }
    cleaned = redact_config(config)
    assert cleaned["data"] == {"train_urls": f"https://h/a-{{0..9}}.tar?sig={MASK}", "batch_size": 32, "balanced": True}
    assert cleaned["logger"]["wandb"] == {"api_key": MASK, "project": "panns"}
    assert cleaned["tokens"] == [f"Bearer {MASK}", (f"password={MASK}",)]
    assert cleaned["pin_secret"] == MASK and cleaned["hf_token"] == "${oc.env:HF_TOKEN}" and cleaned["password"] is None
    assert config["logger"]["wandb"]["api_key"] == "wandbkey0123456789"  # the input is not modified
    from_omegaconf = redact_config(OmegaConf.create(config))  # OmegaConf containers too (tuples become lists)
    assert from_omegaconf["logger"] == cleaned["logger"] and from_omegaconf["tokens"][1] == [f"password={MASK}"]


def write_run_dir(run_dir: Path) -> dict[str, str]:
    """Hydra's three files as Hydra writes them, with secrets in overrides and config values."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    overrides = ["data.train_urls=https://h/a-{0..9}.tar?token=abc123tok", "+logger.wandb.api_key=wandbkey0123456789"]
    texts = {
        "config.yaml": OmegaConf.to_yaml(
            {
                "data": {"train_urls": "https://h/a-{0..9}.tar?token=abc123tok", "batch_size": 4},
                "logger": {"wandb": {"api_key": "wandbkey0123456789"}},
            }
        ),
        "overrides.yaml": OmegaConf.to_yaml(overrides),
        "hydra.yaml": OmegaConf.to_yaml(
            {"hydra": {"overrides": {"task": overrides}, "job": {"override_dirname": ",".join(overrides)}}}
        ),
    }
    for name, text in texts.items():
        (hydra_dir / name).write_text(text)
    return texts


def test_run_dir_configs_are_rewritten_in_place_and_stay_loadable(tmp_path: Path) -> None:
    write_run_dir(tmp_path)
    (tmp_path / ".hydra" / "config.yaml").chmod(0o644)
    rewritten = redact_run_dir_configs(tmp_path)
    assert sorted(path.name for path in rewritten) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    for path in rewritten:
        text = path.read_text()
        assert not any(secret in text for secret in SECRETS), text
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.data.train_urls == f"https://h/a-{{0..9}}.tar?token={MASK}" and config.data.batch_size == 4
    assert config.logger.wandb.api_key == MASK
    assert list(OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")) == [
        f"data.train_urls=https://h/a-{{0..9}}.tar?token={MASK}",
        f"+logger.wandb.api_key={MASK}",
    ]
    assert stat.S_IMODE((tmp_path / ".hydra" / "config.yaml").stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]


def test_files_without_secrets_are_not_touched(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    text = "# written by hand\ndata:\n  train_dir: data/shards/train   # a comment\n"
    (hydra_dir / "config.yaml").write_text(text)
    assert redact_run_dir_configs(tmp_path) == []
    assert (hydra_dir / "config.yaml").read_text() == text


def test_hydra_callback_redacts_the_job_files_and_installs_the_log_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed: list[bool] = []
    # Not on the real root handlers: pytest's capture handlers are shared with other tests.
    monkeypatch.setattr(hydra_callbacks, "install_log_redaction", lambda: installed.append(True))
    write_run_dir(tmp_path)
    config = OmegaConf.create(
        {
            "hydra": {
                "output_subdir": ".hydra",
                "runtime": {"output_dir": str(tmp_path)},
                "mode": "RUN",
                "sweep": {"dir": str(tmp_path / "none")},
            }
        }
    )
    RedactionCallback().on_job_start(config=config)
    assert "abc123tok" not in (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert installed == [True]


@pytest.fixture
def captured_logger() -> tuple[logging.Logger, list[str]]:
    """A logger whose handler formats records into a list (with the redacting filter installed)."""
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger("panns_lightning.test_redact")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    install_log_redaction([logger])
    install_log_redaction([logger])  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    yield logger, lines
    logger.removeHandler(handler)


def test_log_records_are_redacted_after_formatting(captured_logger) -> None:
    logger, lines = captured_logger
    logger.info("reading %s with %s", "https://h/a.tar?X-Amz-Signature=deadbeefsig", {"api_key": "wandbkey0123456789"})
    logger.info("100%% done, key=%d", 3)
    try:
        raise RuntimeError("could not open https://alice:hunter2pw@host/a.tar")
    except RuntimeError:
        logger.exception("failed: Authorization: Bearer xyz.bearer-tok")
    text = "\n".join(lines)
    assert not any(secret in text for secret in SECRETS), text
    assert "X-Amz-Signature=" in text and "100% done, key=3" in text
    assert "RuntimeError: could not open https://alice:" in text  # the traceback is kept, masked


class FakeHyperparameters:
    """What LightningModule/DataModule.save_hyperparameters leaves behind."""

    def __init__(self, **hparams: object) -> None:
        self._hparams = dict(hparams)
        self._hparams_initial = dict(hparams)


def test_recorded_hyperparameters_are_masked_in_place() -> None:
    module = FakeHyperparameters(
        train_dir="data/train", train_urls="pipe:curl -H 'Authorization: Bearer xyz.bearer-tok' https://h/a.tar"
    )
    redact_hparams(module)
    for stored in (module._hparams, module._hparams_initial):
        assert stored["train_dir"] == "data/train"
        assert stored["train_urls"] == f"pipe:curl -H 'Authorization: Bearer {MASK}' https://h/a.tar"


def test_redact_hparams_on_a_real_lightning_datamodule() -> None:
    import lightning as L

    class DataModule(L.LightningDataModule):
        def __init__(self, train_urls: str) -> None:
            super().__init__()
            self.save_hyperparameters()
            redact_hparams(self)
            self.urls = train_urls

    datamodule = DataModule("https://h/a.tar?token=abc123tok")
    assert datamodule.hparams["train_urls"] == f"https://h/a.tar?token={MASK}"
    assert datamodule.hparams_initial["train_urls"] == f"https://h/a.tar?token={MASK}"
    assert datamodule.urls == "https://h/a.tar?token=abc123tok"  # the data still reads the real URL
    assert not any(secret in yaml.safe_dump(dict(datamodule.hparams)) for secret in SECRETS)


def test_outside_hydra_redact_hydra_run_only_installs_the_log_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[bool] = []
    monkeypatch.setattr(hydra_app, "install_log_redaction", lambda: installed.append(True))
    hydra_app.redact_hydra_run()
    assert installed == [True]


@pytest.mark.slow
def test_panns_eval_keeps_a_url_token_out_of_its_run_dir_and_error(tmp_path: Path) -> None:
    """End to end: the token in an override is masked in .hydra/*.yaml, the log and the error line."""
    import subprocess

    from train_fixtures import BIN, REPO

    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"")
    run_dir = tmp_path / "eval"
    result = subprocess.run(
        [
            str(BIN / "panns-eval"),
            f"ckpt_path={checkpoint}",
            f"data_dir='{tmp_path}/shards?token=abc123tok'",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"panns-eval: data_dir={tmp_path}/shards?token={MASK} does not exist "
        "(expected a shard set directory holding manifest.json, made by panns-prepare)"
    )
    saved = sorted(path.name for path in (run_dir / ".hydra").iterdir())
    assert saved == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert "abc123tok" not in path.read_text(), path
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").data_dir == f"{tmp_path}/shards?token={MASK}"


def test_wandb_offline_run_keeps_no_credential_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wandb stores the command line in its run metadata: with a credential in it, metadata is off."""
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli.build import build_loggers
    from panns_lightning.cli.hydra_app import find_config_dir

    secret = "tok3nV4lue9"
    monkeypatch.setattr(sys, "argv", ["panns-train", f"data.train_urls=https://host/s-{{0..9}}.tar?token={secret}"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["logger=wandb", f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}"])
    (logger,) = build_loggers(cfg)
    logger.experiment.log({"x": 1.0})
    logger.experiment.finish()
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in written), "an offline run was written"
    assert not [path for path in written if secret.encode() in path.read_bytes()]
