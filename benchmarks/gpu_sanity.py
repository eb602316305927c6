"""On a GPU, before timing anything: do the shipped levers compute what the plain path computes,
and does the sync-free training step really leave the host alone?

1. cuFFT log-mel vs torchlibrosa's convolution STFT on the same audio (fp32, and the FFT model
   under bf16 autocast, whose front end must stay fp32): max |difference| in dB.
2. bf16 gradient of a confident negative class (logit 7.5) against fp32, through the real loss.
3. ``torch.compile`` (default mode) vs eager outputs of Cnn6 (bf16, channels-last) in eval mode,
   and recompilations over three new batches (bench_train's compile row times Cnn14's).
4. Host syncs per training step of a Lightning fit with ``speed=gpu`` levers, counted by
   ``torch.cuda.set_sync_debug_mode("warn")`` (which sees syncs inside C++ too): every step
   between two log steps must have none.

Prints one line per check with PASS/FAIL and the figure; exits 1 if any fails.

    python benchmarks/gpu_sanity.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import load_speed_preset  # noqa: E402

FRONTEND = {"sample_rate": 32000, "window_size": 1024, "hop_size": 320, "mel_bins": 64, "fmin": 50, "fmax": 14000}
LABELS = [{"index": i, "mid": f"/m/{i}", "name": f"c{i}"} for i in range(8)]


def report(name: str, ok: bool, detail: str, failures: list[str]) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def check_fft(device: torch.device, failures: list[str]) -> None:
    from panns_lightning.models import build_model
    from panns_lightning.models.frontend import FFT_LOGMEL_TOLERANCE_DB

    torch.manual_seed(0)
    # A sweep plus noise: wide dynamic range, like real audio.
    t = torch.arange(4 * 32000, device=device) / 32000
    waveform = (0.3 * torch.sin(2 * torch.pi * (200 + 2000 * t) * t) + 0.01 * torch.randn_like(t))[None]
    conv = build_model("Cnn14", **FRONTEND, classes_num=8, stft="conv").to(device)
    fft = build_model("Cnn14", **FRONTEND, classes_num=8, stft="fft").to(device)
    with torch.no_grad():
        expected = conv.logmel_extractor(conv.spectrogram_extractor(waveform))
        actual = fft.logmel_extractor(fft.spectrogram_extractor(waveform))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fft.eval()
            x = fft.logmel(waveform)
    difference = (actual - expected).abs().max().item()
    report(
        "cuFFT log-mel = convolution log-mel",
        difference <= FFT_LOGMEL_TOLERANCE_DB,
        f"max |diff| {difference:.2e} dB (tolerance {FFT_LOGMEL_TOLERANCE_DB:g}; conv in fp32/TF32 as cuDNN runs it)",
        failures,
    )
    report("front end stays fp32 under bf16 autocast", x.dtype == torch.float32, f"log-mel dtype {x.dtype}", failures)


def check_bf16_gradient(device: torch.device, failures: list[str]) -> None:
    from panns_lightning.training.module import TaggingModule

    config = {"name": "Cnn14", **FRONTEND}
    module = TaggingModule(config, LABELS, augment={"mixup": {"enabled": False}}).to(device).eval()
    with torch.no_grad():
        module.model.fc_audioset.weight.zero_()
        module.model.fc_audioset.bias.fill_(-3.0)
        module.model.fc_audioset.bias[0] = 7.5
    target = torch.zeros(4, len(LABELS), device=device)
    target[:, 1] = 1.0
    grads = []
    for bf16 in (False, True):
        module.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(module.model(torch.randn(4, 32000, device=device) * 0.1), target)
        loss.backward()
        grads.append(float(module.model.fc_audioset.bias.grad[0]))
    relative = abs(grads[1] - grads[0]) / abs(grads[0])
    report(
        "bf16 keeps the gradient at logit 7.5", relative <= 0.01, f"fp32 {grads[0]:.5f}, bf16 {grads[1]:.5f}", failures
    )


def check_compile(device: torch.device, failures: list[str]) -> None:
    from torch._dynamo.utils import counters

    from panns_lightning.models import build_model

    torch._dynamo.reset()
    counters.clear()
    model = build_model("Cnn6", **FRONTEND, classes_num=8, stft="fft").to(device).eval()  # Cnn6: compiles fast
    model = model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    worst = 0.0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for seed in range(3):
            waveform = (
                torch.randn(8, 32000 * 2, device=device, generator=torch.Generator(device).manual_seed(seed)) * 0.1
            )
            worst = max(worst, (compiled(waveform)["logits"] - model(waveform)["logits"]).abs().max().item())
    graphs, recompiles = counters["stats"]["unique_graphs"], sum(counters["recompiles"].values())
    report(
        "torch.compile = eager (Cnn6, bf16, channels_last)",
        worst < 5e-2 and recompiles == 0,
        f"max |logit diff| {worst:.2e}, {graphs} graph(s), {recompiles} recompilations over 3 batches",
        failures,
    )


def check_sync_free(device: torch.device, failures: list[str]) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from panns_lightning.training.module import TaggingModule
    from panns_lightning.training.speed import SpeedOptions

    preset = load_speed_preset("gpu")
    speed = SpeedOptions(
        channels_last=preset["channels_last"], fused_adam=preset["fused_adam"], sync_free=preset["sync_free"]
    )
    config = {"name": "Cnn14", **FRONTEND, "stft": preset["stft"]}
    module = TaggingModule(config, LABELS, speed=speed)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for index in range(20):
        target = torch.zeros(16, len(LABELS))
        target[:, index % len(LABELS)] = 1
        waveform = (torch.randn(16, 32000 * 2, generator=generator) * 3000).to(torch.int16)
        batches.append({"waveform": waveform, "target": target, "key": [str(i) for i in range(16)]})
    per_step: list[int] = []

    class CountSyncs(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.caught = warnings.catch_warnings(record=True)
            self.records = self.caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")
            self.caught.__exit__(None, None, None)
            per_step.append(sum("synchroniz" in str(r.message) for r in self.records))

    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        callbacks=[CountSyncs()],
    )
    trainer.fit(module, DataLoader(batches, batch_size=None, pin_memory=True))
    log_steps = {9, 19}
    quiet = [n for step, n in enumerate(per_step) if step not in log_steps and step > 0]
    report(
        "sync-free steps (speed=gpu levers, Lightning fit)",
        len(quiet) > 0 and max(quiet) == 0,
        f"host syncs per step: {per_step} (log steps 10 and 20 may sync; step 1 sets things up)",
        failures,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fft", "bf16", "compile", "sync"])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit("gpu_sanity: needs a CUDA device")
    print(f"gpu_sanity on {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    failures: list[str] = []
    checks = {"fft": check_fft, "bf16": check_bf16_gradient, "compile": check_compile, "sync": check_sync_free}
    for name, check in checks.items():
        if name in args.skip:
            continue
        try:
            check(device, failures)
        except Exception as error:  # a check that crashes is a failure, reported, and the rest still run
            report(name, False, f"raised {type(error).__name__}: {error}", failures)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
