"""Model files as users meet them: each defect of "Every model file describes itself" as a test.

A text file given as a checkpoint, the upstream notes of a 32-mel export, raw PCM rates on
``--stream``, a fine-tuning override that contradicts the parent's card, the clip length a training
run records, and what importing the tagging path costs. Only entry points that existed before the
model card are imported at module level, so the file runs against older code too (and fails there).
The card itself: tests/test_model_card.py; the round trip of every format: tests/test_model_roundtrip.py.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from panns_lightning import hear
from panns_lightning.cli import export as export_cli
from panns_lightning.cli import tag as tag_cli
from panns_lightning.cli.config_schema import ConfigError
from panns_lightning.cli.preflight import check_weights_file
from panns_lightning.inference import AudioTagger, load_model
from panns_lightning.models.checkpoint import CheckpointReadError, read_state_dict
from panns_lightning.training.finetune import FineTuneModule
from panns_lightning.training.module import TaggingModule
from test_inference_support import LABELS, SMALL_FRONTEND
from train_fixtures import TINY_CNN6, TINY_LABELS

pytestmark = pytest.mark.usefixtures("two_torch_threads")

FRONTEND_16K_32MEL = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
CARD_KEY = "model_card"


@pytest.fixture(scope="module")
def cnn6_16k_32mel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 kHz, 32-mel Cnn6 training checkpoint (the demo's kind of model), written as Lightning does."""
    torch.manual_seed(0)
    module = TaggingModule({"name": "Cnn6", **FRONTEND_16K_32MEL}, TINY_LABELS)
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("cnn6_16k") / "best.ckpt"
    torch.save(checkpoint, path)
    return path


# ---- files that are not checkpoints ----------------------------------------------------------------
TEXTS = {
    "dot": b".",  # the weights-only unpickler used to stop at IndexError: pop from empty list
    "json": b'{"model": "Cnn14"}\n',
    "notes": b"Cnn14 trained on my data, see README\n",
    "empty": b"",
}


@pytest.mark.parametrize("content", list(TEXTS), ids=list(TEXTS))
def test_a_text_file_given_as_a_checkpoint_is_one_line_naming_it(content: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(TEXTS[content])
    messages = []
    for attempt in (
        lambda: AudioTagger(path),
        lambda: load_model(path),
        lambda: read_state_dict(path),
        lambda: hear.load_model(str(path)),
        lambda: FineTuneModule({"name": "Cnn6", **SMALL_FRONTEND}, LABELS, checkpoint=str(path)),
    ):
        with pytest.raises(CheckpointReadError) as error:
            attempt()
        messages.append(str(error.value))
    with pytest.raises(ConfigError) as error:  # panns-finetune / panns-train's preflight of finetune.checkpoint
        check_weights_file("finetune.checkpoint", str(path))
    messages.append(str(error.value))
    assert tag_cli.main([str(tmp_path / "a.wav"), "--checkpoint", str(path)]) == 1
    assert export_cli.main([str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 1
    messages += capsys.readouterr().err.strip().splitlines()
    assert len(messages) == 8
    for message in messages:
        assert str(path) in message and "\n" not in message
        assert "is empty" in message if content == "empty" else "is not a checkpoint" in message
        assert "weights_only=False" not in message  # not mistaken for an unsafe pickle


def test_panns_eval_names_a_text_checkpoint_in_one_line(tmp_path: Path) -> None:
    from panns_lightning.cli.evaluate import evaluate_checkpoint

    path = tmp_path / "best.ckpt"
    path.write_text("not a checkpoint\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_checkpoint(path, tmp_path)
    assert str(exit_info.value) == (
        f"panns-eval: cannot load checkpoint {path}: {path} is not a checkpoint: torch files are zip archives "
        "or pickles, this one starts with b'not a checkpoint' (text)"
    )


# ---- an export reads back with no flags ----------------------------------------------------------------
def test_a_panns_export_of_a_16k_32_mel_model_reads_back_with_no_flags(cnn6_16k_32mel: Path, tmp_path: Path, capsys):
    out = tmp_path / "model.pth"
    assert export_cli.main([str(cnn6_16k_32mel), "--format", "panns", "--out", str(out), "--seconds", "1"]) == 0
    clip = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    expected = AudioTagger(cnn6_16k_32mel).tag(clip, 16000, top_k=3)
    tagger = AudioTagger(out)  # no model name, front end or labels: the file says them
    assert (tagger.model_name, tagger.sample_rate, tagger.labels) == ("Cnn6", 16000, expected.labels)
    np.testing.assert_allclose(tagger.tag(clip, 16000).probabilities, expected.probabilities, atol=1e-6)
    assert hear.load_model(str(out)).network_rate == 16000
    audio = tmp_path / "clip.wav"
    sf.write(audio, clip, 16000)
    capsys.readouterr()
    assert tag_cli.main([str(audio), "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top"][0]["label"] == expected.top[0][0]


# ---- upstream-compatibility notes ------------------------------------------------------------------
def test_the_export_notes_do_not_promise_upstream_loads_a_32_mel_model(cnn6_16k_32mel: Path, tmp_path: Path, capsys):
    out = tmp_path / "cnn6.pth"
    assert export_cli.main([str(cnn6_16k_32mel), "--format", "panns", "--out", str(out), "--seconds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "upstream's code loads it into Cnn6(" not in printed
    assert "loads only in panns_lightning: upstream's Cnn6 hard-codes bn0 = BatchNorm2d(64)" in printed


# ---- --stream: raw PCM rates are never guessed ------------------------------------------------------
def test_raw_pcm_needs_its_rate_unless_the_model_runs_at_the_documented_one(cnn6_16k_32mel, tmp_path, capsys):
    raw = tmp_path / "tone.raw"
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) * 32767).astype("<i2")
    raw.write_bytes(tone.tobytes())
    code = tag_cli.main(["--stream", str(raw), "--checkpoint", str(cnn6_16k_32mel)])
    err = capsys.readouterr().err
    assert code == 1 and "raw PCM carries no sample rate, so it must be given: --stdin-rate HZ" in err
    assert "-f wav" in err
    code = tag_cli.main(["--stream", str(raw), "--checkpoint", str(cnn6_16k_32mel), "--stdin-rate", "16000"])
    err = capsys.readouterr().err
    assert code == 0 and "end of stream at 2.00 s" in err  # not 1.00 s: read at the rate it was written


# ---- fine-tuning: an explicit override that contradicts the parent's card -----------------------------
@pytest.mark.slow  # composes the panns-finetune config and reads the tiny shard set
def test_an_explicit_model_override_contradicting_the_parent_card_is_an_error(
    cnn6_16k_32mel, tiny_audioset, tmp_path, caplog
):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from panns_lightning.cli.build import build_datamodule, build_finetune_module
    from panns_lightning.cli.hydra_app import find_config_dir

    path = cnn6_16k_32mel  # 32 mel bins, its card says so
    common = [
        "experiment=demo_finetune",
        f"data.train_dir={tiny_audioset / 'train'}",
        f"data.test_dir={tiny_audioset / 'eval'}",
        "data.fold=null",
        f"finetune.checkpoint={path}",
        f"paths.root_dir={tmp_path}",
    ]
    hydra_state = HydraConfig.instance()
    for extra, refused in ((["model.mel_bins=64"], True), ([], False)):
        with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=common + extra, return_hydra_config=True)
        hydra_state.set_config(cfg)  # what the app sees: this run's command-line overrides
        try:
            datamodule = build_datamodule(cfg.data)
            if refused:
                with pytest.raises(ConfigError) as error:
                    build_finetune_module(cfg, datamodule)
                said = f"model.mel_bins=64 was given, but finetune.checkpoint={path} holds a model whose card says mel_bins=32"
                assert said in str(error.value)
            else:  # the recipe's 64 (not given on the command line) gives way to the card, and says so
                with caplog.at_level(logging.INFO, logger="panns_lightning.build"):
                    module = build_finetune_module(cfg, datamodule)
                assert module.hparams.model_config["mel_bins"] == 32 and "'mel_bins': 32" in caplog.text
                assert module.model_card().provenance["parent"]["file"] == path.name
        finally:
            hydra_state.cfg = None  # no Hydra run left behind for the tests that follow


# ---- a training run records its clip length and data ----------------------------------------------
@pytest.mark.slow  # one training step through Lightning
def test_a_training_checkpoint_records_its_clip_length_and_data(tiny_audioset: Path, tmp_path: Path) -> None:
    import lightning as L

    from panns_lightning.data import AudioShardDataModule

    data = tmp_path / "data"
    shutil.copytree(tiny_audioset / "train", data)
    datamodule = AudioShardDataModule(train_dir=str(data), batch_size=4, num_workers=0, steps_per_epoch=1)
    datamodule.train_crop_samples = 12000  # 0.75 s crops of the 1 s clips: the clip length the model saw
    config = dict(TINY_CNN6, sample_rate=16000, window_size=512, hop_size=160, fmax=8000)
    module = TaggingModule(config, datamodule.labels, multilabel=datamodule.multilabel)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "best.ckpt"
    trainer.save_checkpoint(path)
    shutil.rmtree(data)  # the receiver of a checkpoint rarely has its training data

    assert AudioTagger(path).window_seconds == 0.75
    card = torch.load(path, weights_only=True)[CARD_KEY]
    assert card["clip_samples"] == 12000
    assert card["provenance"]["training_data"]["num_clips"] == 96
    assert card["provenance"]["training_data"]["resample"] == "sinc"


# ---- tagging does not carry the training stack ----------------------------------------------------
@pytest.mark.slow  # a fresh interpreter
def test_tagging_hear_live_audio_and_export_import_no_training_stack() -> None:
    modules = [
        "panns_lightning.inference",
        "panns_lightning.hear",
        "panns_lightning.export",
        "panns_lightning.live.tagger",
        "panns_lightning.cli.tag",
    ]
    code = f"import sys, {', '.join(modules)}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics', 'hydra', 'omegaconf') or m.startswith('panns_lightning.training')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().replace("'", '"')) == []
