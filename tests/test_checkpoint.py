"""Reading and writing PANNs checkpoints in upstream, bare and Lightning layouts."""

from __future__ import annotations

import collections
import logging

import pytest
import torch

from panns_lightning.models import (
    FRONTEND_DEFAULTS,
    CheckpointMismatchError,
    build_model,
    load_panns_checkpoint,
    save_panns_checkpoint,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name: str = "Cnn6", classes_num: int = 10) -> torch.nn.Module:
    return build_model(name, **FRONTEND_DEFAULTS[name], classes_num=classes_num)


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every float tensor so a load that silently did nothing would be caught."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.dtype.is_floating_point:
                value.add_(torch.rand_like(value))
    return model


def assert_same_state(left: torch.nn.Module, right: torch.nn.Module) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert left_state.keys() == right_state.keys()
    for key in left_state:
        assert torch.equal(left_state[key], right_state[key]), key


def test_save_writes_upstream_format_and_round_trips_strictly(tmp_path):
    source = randomised(build())
    path = save_panns_checkpoint(source, tmp_path / "sub" / "cnn6.pth")
    content = torch.load(path, weights_only=True)
    assert list(content) == ["model"]  # what upstream/panns-inference read: checkpoint["model"]
    assert [p.name for p in path.parent.iterdir()] == ["cnn6.pth"]  # no temp file left behind

    target = build()
    assert load_panns_checkpoint(target, path) is target
    assert_same_state(source, target)


def test_upstream_file_with_extra_entries_loads(tmp_path):
    source = randomised(build())
    path = tmp_path / "upstream.pth"
    torch.save({"iteration": 100000, "model": source.state_dict()}, path)
    assert_same_state(source, load_panns_checkpoint(build(), path))


def test_bare_state_dict_loads(tmp_path):
    source = randomised(build())
    path = tmp_path / "bare.pth"
    torch.save(source.state_dict(), path)
    assert_same_state(source, load_panns_checkpoint(build(), path))


def test_data_parallel_prefix_is_stripped(tmp_path):
    source = randomised(build())
    path = tmp_path / "dp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    assert_same_state(source, load_panns_checkpoint(build(), path))


def test_lightning_checkpoint_loads_the_model_attribute(tmp_path):
    source = randomised(build())
    state = collections.OrderedDict((f"model.{k}", v) for k, v in source.state_dict().items())
    state["loss_fn.pos_weight"] = torch.ones(10)  # other LightningModule state is ignored
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0", "state_dict": state}, path)
    assert_same_state(source, load_panns_checkpoint(build(), path))


def test_lightning_checkpoint_without_model_attribute_is_explained(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.fc1.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointMismatchError, match=r"no 'model\.\*' keys.*\['net'\]"):
        load_panns_checkpoint(build(), path)


def test_mismatch_names_keys_counts_and_best_matching_zoo_model(tmp_path):
    path = save_panns_checkpoint(build("Cnn10", classes_num=527), tmp_path / "cnn10.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        load_panns_checkpoint(build("Cnn6"), path)
    message = str(error.value)
    assert str(path) in message and "does not fit Cnn6" in message
    # Cnn10 has a second 3x3 conv per block (conv2/bn2) that Cnn6 lacks: 4 blocks x 6 keys.
    assert "24 unexpected in the file: conv_block1.conv2.weight" in message
    assert "with other shapes" in message
    assert "conv_block1.conv1.weight file (64, 1, 3, 3) vs model (64, 1, 5, 5)" in message
    assert "fc_audioset.weight file (527, 512) vs model (10, 512)" in message
    assert "best fits zoo model Cnn10 (100%" in message


def test_missing_keys_are_reported(tmp_path):
    state = build().state_dict()
    del state["fc1.weight"], state["conv_block4.bn1.running_mean"]
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError, match=r"2 missing from the file: conv_block4\.bn1\.running_mean, fc1\.weight"):
        load_panns_checkpoint(build(), path)


def test_classifier_only_mismatch_suggests_and_allows_non_strict_fine_tuning(tmp_path, caplog):
    pretrained = randomised(build(classes_num=527))
    path = save_panns_checkpoint(pretrained, tmp_path / "audioset.pth")
    with pytest.raises(CheckpointMismatchError, match="strict=False"):
        load_panns_checkpoint(build(classes_num=10), path)

    target = build(classes_num=10)
    head_before = target.fc_audioset.weight.clone()
    with caplog.at_level(logging.WARNING):
        load_panns_checkpoint(target, path, strict=False)
    assert "fc_audioset.weight" in caplog.text
    assert torch.equal(target.fc1.weight, pretrained.fc1.weight)
    assert torch.equal(target.conv_block3.conv1.weight, pretrained.conv_block3.conv1.weight)
    assert torch.equal(target.fc_audioset.weight, head_before)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "Cnn14_mAP=0.431.pth"
    with pytest.raises(FileNotFoundError, match="Cnn14_mAP=0.431.pth"):
        load_panns_checkpoint(build(), path)


class NotATensor:
    pass


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": build().state_dict(), "sampler": NotATensor()}, path)
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        load_panns_checkpoint(build(), path)


def test_non_tensor_entries_are_named(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"fc1.weight": torch.zeros(1), "note": "hello"}, path)
    with pytest.raises(CheckpointMismatchError, match="'note'|note"):
        load_panns_checkpoint(build(), path)
