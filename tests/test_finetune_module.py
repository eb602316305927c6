"""FineTuneModule: strict backbone load from upstream / Lightning files, new head, freezing modes, layer decay."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from panns_lightning.models import CheckpointMismatchError, build_model, save_panns_checkpoint
from panns_lightning.training.checkpoints import load_tagging_module
from panns_lightning.training.finetune import FineTuneModule, parameter_groups
from panns_lightning.training.module import TaggingModule

CONFIG = dict(
    name="Cnn6", sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, time_drop_width=8
)
LABELS = [{"index": i, "mid": f"m{i}", "name": f"class {i}"} for i in range(4)]


@pytest.fixture(scope="module")
def upstream_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A PANNs-format file ({"model": ...}) with a 527-class fc_audioset and non-trivial BN statistics."""
    torch.manual_seed(0)
    model = build_model(**{k: v for k, v in CONFIG.items() if k != "time_drop_width"}, classes_num=527)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    path = save_panns_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "Cnn6_16k.pth")
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def fit_a_few_steps(module: L.LightningModule, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    batches = [
        {
            "waveform": torch.randn(4, 8000, generator=generator),
            "target": torch.eye(4)[torch.randint(0, 4, (4,), generator=generator)],
            "key": list("abcd"),
        }
        for _ in range(steps)
    ]
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))


def backbone_changes(module: FineTuneModule, reference: dict[str, torch.Tensor]) -> dict[str, bool]:
    state = module.model.state_dict()
    return {key: not torch.equal(state[key], reference[key]) for key in reference if not key.startswith("fc_audioset")}


def test_upstream_weights_load_and_the_head_is_new(upstream_file) -> None:
    path, reference = upstream_file
    module = FineTuneModule(CONFIG, LABELS, checkpoint=str(path))
    head = module.model.fc_audioset
    assert (head.in_features, head.out_features) == (512, 4) and module.embedding_dim == 512
    assert not any(backbone_changes(module, reference).values())
    output = module.model(torch.randn(2, 8000))
    assert output["clipwise_output"].shape == (2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("mode, freeze_until", [("full", None), ("linear_probe", None), ("partial", "conv_block2")])
def test_training_moves_exactly_the_unfrozen_layers(upstream_file, mode: str, freeze_until: str | None) -> None:
    path, reference = upstream_file
    module = FineTuneModule(
        CONFIG,
        LABELS,
        checkpoint=str(path),
        mode=mode,
        freeze_until=freeze_until,
        lr=1e-2,
        augment={"mixup": {"enabled": True}},
    )
    head_before = module.model.fc_audioset.weight.detach().clone()
    fit_a_few_steps(module)
    changed = backbone_changes(module, reference)
    assert not torch.equal(module.model.fc_audioset.weight, head_before)
    if mode == "full":
        assert (
            changed["conv_block1.conv1.weight"]
            and changed["bn0.running_mean"]
            and changed["conv_block4.bn1.running_var"]
        )
    if mode == "linear_probe":
        assert not any(changed.values()), [k for k, v in changed.items() if v]  # weights and BN statistics
    if mode == "partial":
        assert (
            not changed["conv_block1.conv1.weight"]
            and not changed["conv_block2.bn1.running_mean"]
            and not changed["bn0.running_var"]
        )
        assert changed["conv_block3.conv1.weight"] and changed["conv_block3.bn1.running_mean"] and changed["fc1.weight"]


def test_front_end_and_architecture_mismatches_are_errors(upstream_file, tmp_path: Path) -> None:
    path, _ = upstream_file
    with pytest.raises(CheckpointMismatchError, match="best fits Cnn6"):
        FineTuneModule(dict(CONFIG, name="Cnn10"), LABELS, checkpoint=str(path))
    with pytest.raises(CheckpointMismatchError, match="another front end"):
        FineTuneModule(dict(CONFIG, fmax=7000), LABELS, checkpoint=str(path))  # equal shapes, other mel filters
    with pytest.raises(ValueError, match="freeze_until='conv_block9' is not a layer of Cnn6"):
        FineTuneModule(CONFIG, LABELS, checkpoint=str(path), mode="partial", freeze_until="conv_block9")
    with pytest.raises(ValueError, match="needs freeze_until"):
        FineTuneModule(CONFIG, LABELS, mode="partial")


@pytest.mark.slow
def test_from_our_lightning_checkpoint_and_back(upstream_file, tmp_path: Path) -> None:
    path, _ = upstream_file
    pretrained = TaggingModule(CONFIG, [{"index": i, "mid": str(i), "name": str(i)} for i in range(7)])
    trainer = L.Trainer(accelerator="cpu", logger=False, max_steps=0)
    trainer.strategy.connect(pretrained)
    ours = tmp_path / "pretrained.ckpt"
    trainer.save_checkpoint(ours)
    module = FineTuneModule(CONFIG, LABELS, checkpoint=str(ours), mode="linear_probe")
    assert torch.equal(module.model.conv_block2.conv1.weight, pretrained.model.conv_block2.conv1.weight)

    fit_a_few_steps(module, steps=1)
    tuned = tmp_path / "finetuned.ckpt"
    module.trainer.save_checkpoint(tuned)
    restored = load_tagging_module(tuned)
    assert isinstance(restored, FineTuneModule)  # the checkpoint says what it is
    assert restored.label_names == [label["name"] for label in LABELS] and restored.mode == "linear_probe"
    assert torch.equal(restored.model.fc_audioset.weight, module.model.fc_audioset.weight)
    # A fine-tuned checkpoint is itself a backbone for the next fine-tuning (its head is dropped).
    again = FineTuneModule(CONFIG, LABELS[:2], checkpoint=str(tuned))
    assert torch.equal(again.model.conv_block1.conv1.weight, module.model.conv_block1.conv1.weight)


def test_layer_decay_scales_lr_by_depth_from_the_head(upstream_file) -> None:
    path, _ = upstream_file
    module = FineTuneModule(
        CONFIG, LABELS, checkpoint=str(path), mode="partial", freeze_until="conv_block2", layer_decay=0.5
    )
    groups = {group["name"]: group["lr"] for group in parameter_groups(module.model, 1.0, 0.5)}
    assert groups == {"conv_block3": 0.125, "conv_block4": 0.25, "fc1": 0.5, "fc_audioset": 1.0}
    optimizer = module.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in module.parameters() if p.requires_grad
    )
