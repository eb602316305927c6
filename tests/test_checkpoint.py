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
    with pytest.raises(
        CheckpointMismatchError, match=r"2 missing from the file: conv_block4\.bn1\.running_mean, fc1\.weight"
    ):
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


def test_class_count_mismatch_is_named_with_both_counts(tmp_path):
    path = save_panns_checkpoint(build(classes_num=527), tmp_path / "audioset.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        load_panns_checkpoint(build(classes_num=10), path)
    assert f"Class count: {path} has 527 classes, Cnn6 expects 10." in str(error.value)


def test_unreadable_and_directory_paths_are_named(tmp_path):
    from panns_lightning.models.checkpoint import CheckpointReadError

    truncated = tmp_path / "truncated.pth"
    save_panns_checkpoint(build(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointReadError, match=f"{truncated} cannot be read as a torch checkpoint"):
        load_panns_checkpoint(build(), truncated)
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path} is a directory"):
        load_panns_checkpoint(build(), tmp_path)


# ---- the same checks through the other loaders: Lightning checkpoints, fine-tuned ones, CLIs ----


def lightning_file(tmp_path, hyper_model: str = "Cnn6", state_model: str = "Cnn6", state_classes: int = 5):
    """A Lightning-layout checkpoint whose hyper-parameters describe one network and whose state_dict is another's."""
    from panns_lightning.training.module import TaggingModule
    from test_inference_support import LABELS, SMALL_FRONTEND

    labels = [{"index": i, "mid": f"/t/{i}", "name": f"c{i}"} for i in range(state_classes)]
    described = TaggingModule({"name": hyper_model, **SMALL_FRONTEND}, LABELS)
    stored = TaggingModule({"name": state_model, **SMALL_FRONTEND}, labels)
    path = tmp_path / f"{state_model}_{state_classes}.ckpt"
    torch.save({"hyper_parameters": dict(described.hparams), "state_dict": stored.state_dict()}, path)
    return path


def test_lightning_checkpoint_with_another_class_count_is_named(tmp_path):
    from panns_lightning.training.checkpoints import load_tagging_module

    path = lightning_file(tmp_path, state_classes=7)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tagging_module(path)
    message = str(error.value)
    assert str(path) in message and "does not fit the Cnn6 its hyper_parameters describe" in message
    assert "model.fc_audioset.weight: file (7, 512) vs model (5, 512)" in message
    assert "the file's classifier has 7 classes, the model expects 5" in message


def test_lightning_checkpoint_of_another_architecture_is_named(tmp_path):
    from panns_lightning.training.checkpoints import load_tagging_module

    path = lightning_file(tmp_path, state_model="Cnn10")
    with pytest.raises(
        CheckpointMismatchError, match=r"does not fit the Cnn6 .*unexpected keys \(model\.conv_block1\.bn2"
    ):
        load_tagging_module(path)


def test_fine_tuned_checkpoint_with_another_class_count_is_named(tmp_path):
    from panns_lightning.training.checkpoints import load_tagging_module
    from panns_lightning.training.finetune import FineTuneModule
    from test_inference_support import LABELS, SMALL_FRONTEND

    module = FineTuneModule({"name": "Cnn6", **SMALL_FRONTEND}, LABELS)
    hyper = dict(module.hparams, labels=LABELS[:3])
    path = tmp_path / "finetuned.ckpt"
    torch.save({"hyper_parameters": hyper, "state_dict": module.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match="the file's classifier has 5 classes, the model expects 3"):
        load_tagging_module(path)


def test_checkpoint_of_another_lightning_module_is_named(tmp_path):
    from panns_lightning.training.checkpoints import load_tagging_module

    path = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": {"hidden": 3}, "state_dict": {"net.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=rf"{path} was not written by a panns_lightning TaggingModule.*'model_config'"):
        load_tagging_module(path)


def test_tag_and_export_name_a_wrong_model_for_a_published_file(tmp_path, capsys):
    from panns_lightning.cli import export as export_cli
    from panns_lightning.cli import tag as tag_cli

    path = save_panns_checkpoint(build(classes_num=527), tmp_path / "weights.pth")
    assert tag_cli.main([str(tmp_path / "a.wav"), "--checkpoint", str(path), "--model", "Cnn10"]) == 1
    assert export_cli.main([str(path), "--format", "torchscript", "--model", "Cnn10"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2  # one line each
    for line in lines:
        assert f"cannot load checkpoint {path}" in line and "does not fit Cnn10" in line
        assert "best fits zoo model Cnn6" in line


def test_export_missing_checkpoint_is_one_line(tmp_path, capsys):
    from panns_lightning.cli import export as export_cli

    missing = tmp_path / "nope.ckpt"
    assert export_cli.main([str(missing), "--format", "onnx"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"panns-export: cannot load checkpoint {missing}: checkpoint not found: {missing}"
    )


def test_eval_names_a_class_count_that_differs_from_the_data(tmp_path):
    import json

    from panns_lightning.cli.evaluate import evaluate_checkpoint
    from test_inference_support import SMALL_FRONTEND, cnn6_checkpoint

    shards = tmp_path / "shards"
    shards.mkdir()
    labels = [{"index": i, "mid": f"/m/{i}", "name": f"other {i}"} for i in range(3)]
    manifest = {
        "format_version": 1,
        "sample_rate": SMALL_FRONTEND["sample_rate"],
        "clip_samples": 8000,
        "storage": "int16",
        "multilabel": True,
        "labels": labels,
        "num_clips": 3,
        "class_counts": [1, 1, 1],
        "shards": [{"name": "eval-000000.tar", "num_clips": 3}],
    }
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        SystemExit, match=r"label list of .*cnn6\.ckpt \(5 classes\) differs from .*manifest\.json \(3 classes\)"
    ):
        evaluate_checkpoint(cnn6_checkpoint(), shards, num_workers=0)
