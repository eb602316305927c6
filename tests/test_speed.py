"""Issue 12's guarantees: bf16 keeps fp32's gradients, and every speed lever computes what the
plain path computes (same log-mel, same outputs, same weights after a skipped step, no host sync).

Speed itself is measured by ``benchmarks/bench_train.py`` and ``benchmarks/bench_loop.py``,
never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panns_lightning.audio import load_audio
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, load_panns_checkpoint, save_panns_checkpoint
from panns_lightning.models.frontend import FFT_LOGMEL_TOLERANCE_DB
from panns_lightning.training.finetune import FineTuneModule
from panns_lightning.training.module import TaggingModule, float_waveform
from panns_lightning.training.speed import SpeedOptions
from shared_data import SHARED_AUDIOSET
from train_fixtures import TINY_CNN6, TINY_LABELS

NEGATIVE_LOGIT = 7.5


def confident_module(module: TaggingModule) -> TaggingModule:
    """Every clip gets logits (7.5, -2, 1): class 0 is confidently on, whatever the input."""
    with torch.no_grad():
        module.model.fc_audioset.weight.zero_()
        module.model.fc_audioset.bias.copy_(torch.tensor([NEGATIVE_LOGIT, -2.0, 1.0]))
    return module.eval()  # no dropout: both precisions see the same network


def logit_gradient(module: TaggingModule, target: torch.Tensor, bf16: bool) -> float:
    """d(training loss)/d(logit of class 0), summed over the batch (the bias gradient)."""
    module.zero_grad(set_to_none=True)
    waveform = torch.randn(4, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output = module.model(waveform)
        loss = module.loss(output, target)
    loss.backward()
    return float(module.model.fc_audioset.bias.grad[0])


def test_bf16_bce_keeps_the_gradient_of_a_confident_negative_class() -> None:
    module = confident_module(TaggingModule(TINY_CNN6, TINY_LABELS, augment={"mixup": {"enabled": False}}))
    target = torch.zeros(4, 3)
    target[:, 1] = 1.0  # class 0 is a negative at logit 7.5
    fp32 = logit_gradient(module, target, bf16=False)
    bf16 = logit_gradient(module, target, bf16=True)
    assert fp32 > 0.05  # sigmoid(7.5) / 3 classes: a large push down
    assert bf16 == pytest.approx(fp32, rel=0.01)


def test_the_same_check_catches_a_bf16_sigmoid_head() -> None:
    """What the fp32 head prevents: BCE through a bf16 sigmoid has no gradient left at logit 7.5."""
    logits = torch.full((4, 1), NEGATIVE_LOGIT, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = torch.sigmoid(logits.to(torch.bfloat16))
    F.binary_cross_entropy(probs.float().clamp(0, 1), torch.zeros(4, 1)).backward()
    assert probs.float().max().item() == 1.0 and float(logits.grad.abs().max()) < 1e-6


def test_bf16_fine_tuning_cross_entropy_keeps_the_gradient() -> None:
    module = FineTuneModule(TINY_CNN6, TINY_LABELS, multilabel=False, augment={"mixup": {"enabled": False}})
    module = confident_module(module)
    target = torch.zeros(4, 3)
    target[:, 2] = 1.0  # the true class is 2; class 0 is wrong and confident
    fp32 = logit_gradient(module, target, bf16=False)
    bf16 = logit_gradient(module, target, bf16=True)
    assert fp32 > 0.5
    assert bf16 == pytest.approx(fp32, rel=0.01)


def test_the_head_and_logits_stay_fp32_under_autocast() -> None:
    model = build_model("Cnn6", **{k: v for k, v in TINY_CNN6.items() if k != "name"}, classes_num=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model.train()(torch.randn(4, 4000))
    assert output["logits"].dtype == torch.float32 and output["clipwise_output"].dtype == torch.float32
    assert output["embedding"].dtype == torch.bfloat16  # the trunk did run in bf16


# ----------------------------------------------------------------------------- FFT front end


@pytest.mark.skipif(not (SHARED_AUDIOSET / "R9_ZSCveAHg_7s.wav").is_file(), reason="shared AudioSet clip absent")
def test_fft_log_mel_matches_the_convolution_on_real_audio() -> None:
    frontend = FRONTEND_DEFAULTS["Cnn14"]
    waveform = torch.from_numpy(load_audio(SHARED_AUDIOSET / "R9_ZSCveAHg_7s.wav", frontend["sample_rate"]))[None]
    conv = build_model("Cnn14", **frontend, classes_num=527, stft="conv")
    fft = build_model("Cnn14", **frontend, classes_num=527, stft="fft")
    with torch.no_grad():
        expected = conv.logmel_extractor(conv.spectrogram_extractor(waveform))
        actual = fft.logmel_extractor(fft.spectrogram_extractor(waveform))
    assert actual.shape == expected.shape == (1, 1, 7 * 100 + 1, 64)
    assert expected.max() - expected.min() > 60  # real audio: a wide dynamic range
    assert (actual - expected).abs().max().item() <= FFT_LOGMEL_TOLERANCE_DB


def test_fft_model_loads_a_published_layout_strictly_and_keeps_its_outputs(tmp_path) -> None:
    """Upstream's file (STFT kernels included) loads strictly into the FFT model; outputs agree."""
    frontend = FRONTEND_DEFAULTS["Cnn14"]
    upstream = build_model("Cnn14", **frontend, classes_num=527)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained checkpoint
        for name, buffer in upstream.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    path = save_panns_checkpoint(upstream, tmp_path / "Cnn14.pth")
    fast = load_panns_checkpoint(build_model("Cnn14", **frontend, classes_num=527, stft="fft"), path, strict=True)
    fast.to(memory_format=torch.channels_last)
    waveform = torch.randn(2, 16000) * 0.3
    with torch.no_grad():
        expected, actual = upstream.eval()(waveform), fast.eval()(waveform)
    for key in ("clipwise_output", "embedding"):
        assert (actual[key] - expected[key]).abs().max().item() <= 1e-5, key


# ----------------------------------------------------------------------------- Wavegram branch


def test_wavegram_as_2d_convolutions_computes_the_same_training_step() -> None:
    config = dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=32, fmin=50, fmax=4000, classes_num=3)
    torch.manual_seed(0)
    plain = build_model("Wavegram_Logmel_Cnn14", **config, time_stripes_num=0, freq_stripes_num=0)
    fast = build_model("Wavegram_Logmel_Cnn14", **config, time_stripes_num=0, freq_stripes_num=0, wave_conv2d=True)
    fast.load_state_dict(plain.state_dict())
    waveform = torch.randn(4, 8000) * 0.1
    outputs = []
    for model in (plain, fast):
        torch.manual_seed(1)  # same dropout masks
        output = model.train()(waveform)
        output["logits"].sum().backward()
        outputs.append(output)
    torch.testing.assert_close(outputs[1]["logits"], outputs[0]["logits"], rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, a), b in zip(plain.named_buffers(), fast.buffers()):  # BatchNorm statistics moved alike
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    # Channels-last (where the 2-D form pays): same outputs. Compared in eval mode because dropout
    # draws its mask in memory order, which channels-last permutes.
    fast.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(
            fast.eval()(waveform)["logits"], plain.eval()(waveform)["logits"], rtol=1e-4, atol=1e-5
        )


# ----------------------------------------------------------------------------- int16 batches


def test_int16_batches_scale_to_the_float_path_bit_for_bit() -> None:
    samples = np.random.default_rng(0).integers(-32768, 32768, size=(2, 1000)).astype(np.int16)
    expected = samples.astype(np.float32) / 32767.0  # what the float stream writes
    assert torch.equal(float_waveform(torch.from_numpy(samples)), torch.from_numpy(expected))


# ----------------------------------------------------------------------------- compile


def test_compiled_model_gives_eager_outputs_without_recompiling() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = build_model("Cnn6", **{k: v for k, v in TINY_CNN6.items() if k != "name"}, classes_num=3, stft="fft").eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for seed in range(3):  # new inputs of the same shape: one graph, no recompilation
            waveform = torch.randn(2, 4000, generator=torch.Generator().manual_seed(seed)) * 0.1
            expected, actual = model(waveform), compiled(waveform)
            for key in ("logits", "embedding"):
                torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]


# ----------------------------------------------------------------------------- config


def test_speed_options_refuse_sync_free_without_the_fused_optimizer() -> None:
    with pytest.raises(ValueError, match="fused_adam"):
        SpeedOptions(sync_free=True)
    with pytest.raises(ValueError, match="compile_mode"):
        SpeedOptions(compile_mode="fastest")


# ----------------------------------------------------------------------------- sync-free step

SYNC_FREE = SpeedOptions(fused_adam=True, sync_free=True)
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostReadCounter:
    """Counts, per training batch, the Python-level reads of tensor values (each a host sync on a GPU).

    Reads inside C++ (e.g. a boolean-mask index) are not seen; benchmarks/gpu_check.sh runs the
    loop under ``torch.cuda.set_sync_debug_mode`` for those.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.per_step: list[int] = []
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)

        return read

    def callback(self):
        import lightning as L

        counter = self

        class PerStep(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                counter._start = counter.count

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                counter.per_step.append(counter.count - counter._start)

        return PerStep()


def random_batches(count: int, poisoned: set[int] = frozenset()) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for index in range(count):
        waveform = (torch.randn(4, 4000, generator=generator) * 3000).to(torch.int16)  # int16 batches
        target = torch.zeros(4, 3)
        target[:, index % 3] = 1.0
        if index in poisoned:
            target[0, 0] = float("nan")  # a NaN loss (int16 audio cannot hold one)
        batches.append({"waveform": waveform, "target": target, "key": [f"b{index}c{clip}" for clip in range(4)]})
    return batches


def fit(module: TaggingModule, batches: list[dict], tmp_path, callbacks=(), log_every: int = 5):
    import lightning as L
    from torch.utils.data import DataLoader

    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=log_every,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return trainer


@pytest.mark.slow
def test_sync_free_steps_read_nothing_from_the_device_between_log_steps(tmp_path, monkeypatch) -> None:
    counter = HostReadCounter(monkeypatch)
    augmented = dict(TINY_CNN6, time_drop_width=8, time_stripes_num=2, freq_drop_width=4, freq_stripes_num=2)
    module = TaggingModule(
        augmented, TINY_LABELS, augment={"mixup": {"enabled": True}}, speed=SYNC_FREE
    )  # mixup and SpecAugment on
    fit(module, random_batches(10), tmp_path, callbacks=[counter.callback()], log_every=5)
    log_steps = {4, 9}  # 0-based steps after which Lightning logs (and reads) anyway
    assert [n for step, n in enumerate(counter.per_step) if step not in log_steps] == [0] * 8
    assert all(counter.per_step[step] > 0 for step in log_steps)  # the counter does see reads


@pytest.mark.slow
def test_without_sync_free_every_step_reads_the_device(tmp_path, monkeypatch) -> None:
    counter = HostReadCounter(monkeypatch)
    module = TaggingModule(TINY_CNN6, TINY_LABELS, augment={"mixup": {"enabled": False}})
    fit(module, random_batches(4), tmp_path, callbacks=[counter.callback()], log_every=50)
    assert all(n > 0 for n in counter.per_step)


@pytest.mark.slow
def test_sync_free_guard_skips_on_the_device_and_stops_after_k_in_a_row(tmp_path) -> None:
    from panns_lightning.training.numerics import NonFiniteTrainingError

    module = TaggingModule(
        TINY_CNN6, TINY_LABELS, augment={"mixup": {"enabled": False}}, max_nonfinite_steps=3, speed=SYNC_FREE
    )
    fit(module, random_batches(6, poisoned={1, 4}), tmp_path, log_every=4)
    assert module.nonfinite.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())

    before = {}

    class Snapshot(__import__("lightning").Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                before.update({k: v.detach().clone() for k, v in pl_module.state_dict().items()})
                before.update(
                    {f"opt.{i}": s["exp_avg"].clone() for i, s in enumerate(trainer.optimizers[0].state.values())}
                )

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 2:  # the poisoned step changed no weight and no Adam moment
                for key, value in pl_module.state_dict().items():
                    if value.dtype.is_floating_point and "running" not in key:
                        assert torch.equal(value, before[key]), key
                for i, state in enumerate(trainer.optimizers[0].state.values()):
                    assert torch.equal(state["exp_avg"], before[f"opt.{i}"])

    module = TaggingModule(
        TINY_CNN6, TINY_LABELS, augment={"mixup": {"enabled": False}}, max_nonfinite_steps=3, speed=SYNC_FREE
    )
    with pytest.raises(NonFiniteTrainingError, match=r"3 consecutive steps \(3\.\.5\).*b4c0"):
        fit(module, random_batches(8, poisoned={2, 3, 4}), tmp_path, callbacks=[Snapshot()], log_every=4)


# ----------------------------------------------------------------------------- SpecAugment


def test_vectorised_specaugment_draws_torchlibrosas_distribution() -> None:
    """Same stripe widths and positions in distribution as upstream's per-example loop."""
    from torchlibrosa.augmentation import DropStripes as UpstreamDropStripes

    from panns_lightning.models.frontend import DropStripes

    torch.manual_seed(0)
    for dim, length in ((2, 100), (3, 32)):
        ours, upstream = DropStripes(dim, 16, 2).train(), UpstreamDropStripes(dim, 16, 2).train()
        shape = (3000, 1, length, 4) if dim == 2 else (3000, 1, 4, length)
        axis = (0, 1, 3) if dim == 2 else (0, 1, 2)
        ours_profile = (ours(torch.ones(shape)) == 0).float().mean(dim=axis)
        upstream_profile = (upstream(torch.ones(shape)) == 0).float().mean(dim=axis)
        assert float(ours_profile.mean()) == pytest.approx(float(upstream_profile.mean()), abs=0.01)  # fraction dropped
        assert (ours_profile - upstream_profile).abs().max() < 0.04  # where along the axis
        assert torch.equal(ours.eval()(torch.ones(shape)), torch.ones(shape))
