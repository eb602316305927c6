"""Non-finite losses and gradients: skip the update, count it, stop when it keeps happening.

One bad batch (a clip of digital garbage, an overflow in a rare mixup pair) should not end a
multi-day run, and it must not write NaN into the weights either: the update is skipped. A run
that produces non-finite values batch after batch is broken (diverged, lr too high, data
garbage) and training on would only waste GPU time: after ``max_consecutive`` skipped steps in a
row it stops with the step numbers and the batch keys that failed.

Mixed precision: the GPU trainer presets use ``bf16-mixed`` (fp32 weights and optimizer, bf16
autocast; bf16 has fp32's exponent range, so no loss scaling). With ``16-mixed`` Lightning's
GradScaler already skips steps whose scaled gradients overflow and lowers the scale; then only
the loss is checked here and the gradients are left to the scaler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Decides per optimizer step whether loss and gradients are finite; counts skips.

    ``note_batch`` is called with the loss (and the batch keys) in ``training_step``; ``check`` in
    ``on_before_optimizer_step`` after backward. Skipping is done by dropping the gradients
    (``p.grad = None``): Adam then leaves those parameters and their moments untouched, so the
    step changes nothing but the step counter.
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.last_problem = ""
        self._loss: torch.Tensor | None = None
        self._keys: list[str] = []
        self._failed_steps: list[int] = []

    def note_batch(self, loss: torch.Tensor, keys: Sequence[str] | None) -> None:
        """Remember the batch's loss (no device sync here: ``check`` syncs once per step)."""
        self._loss = loss.detach()
        self._keys = list(keys or [])

    def check(self, parameters: Iterable[torch.nn.Parameter], global_step: int, *, clear_gradients: bool = True) -> bool:
        """True if this step is skipped; raises :class:`NonFiniteTrainingError` after too many in a row."""
        with_grad = [p for p in parameters if p.grad is not None]
        loss_finite = torch.isfinite(self._loss).all() if self._loss is not None else None
        grads_finite = gradients_finite(with_grad) if clear_gradients and with_grad else None
        checks = [flag for flag in (loss_finite, grads_finite) if flag is not None]
        if not checks or bool(torch.stack([flag.to(checks[0].device) for flag in checks]).all()):
            self.consecutive = 0
            self._failed_steps = []
            return False
        problem = "loss is not finite" if loss_finite is not None and not bool(loss_finite) else "a gradient is not finite"
        if clear_gradients:
            for parameter in with_grad:
                parameter.grad = None
        self.skipped += 1
        self.consecutive += 1
        step = global_step + 1
        self._failed_steps.append(step)
        self.last_problem = f"{problem} (batch keys: {format_keys(self._keys)})"
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"non-finite loss or gradients in {self.consecutive} consecutive steps "
                f"({self._failed_steps[0]}..{step}); last: {self.last_problem}; stopping "
                f"(optim.max_nonfinite_steps={self.max_consecutive})"
            )
        return True


def gradients_finite(parameters: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """A 0-d bool tensor, no host sync: one fused norm per device; a non-finite element makes its norm non-finite."""
    norms = torch._foreach_norm([p.grad for p in parameters])  # type: ignore[misc]
    return torch.isfinite(torch.stack([n.float().to(norms[0].device) for n in norms])).all()


def format_keys(keys: Sequence[str], limit: int = 8) -> str:
    if not keys:
        return "unknown"
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
