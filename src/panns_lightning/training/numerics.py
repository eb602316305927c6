"""Non-finite losses and gradients: skip the update, count it, stop when it keeps happening.

One bad batch (a clip of digital garbage, an overflow in a rare mixup pair) should not end a
multi-day run, and it must not write NaN into the weights either: the update is skipped. A run
that produces non-finite values batch after batch is broken (diverged, lr too high, data
garbage) and training on would only waste GPU time: after ``max_consecutive`` skipped steps in a
row it stops with the step numbers and the batch keys that failed.

Two ways to skip, chosen by the optimizer:

- **On the device, no host sync** (fused Adam): the step's verdict stays a device tensor handed to
  the optimizer as ``found_inf`` (the hook ``GradScaler`` uses), whose fused kernel then leaves
  weights, moments and step count untouched. The verdicts are read back every ``review_every``
  steps in one transfer (:meth:`NonFiniteGuard.review`), so counting, logging and stopping happen
  up to that many steps late; the weights are protected at every step.
- **On the host** (other optimizers): :meth:`NonFiniteGuard.check` reads the verdict at once and
  drops the gradients (``p.grad = None``), so the optimizer leaves those parameters and their
  moments untouched. One host sync per step.

Mixed precision: the GPU trainer presets use ``bf16-mixed`` (fp32 weights and optimizer, bf16
autocast; bf16 has fp32's exponent range, so no loss scaling). With ``16-mixed`` Lightning's
GradScaler already skips steps whose scaled gradients overflow and lowers the scale; then only
the loss is checked here and the gradients are left to the scaler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


@dataclass
class _PendingVerdict:
    step: int
    keys: list[str]
    finite: torch.Tensor  # [loss finite, gradients finite] as a device bool tensor


class NonFiniteGuard:
    """Decides per optimizer step whether loss and gradients are finite; counts skips.

    ``note_batch`` is called with the loss (and the batch keys) in ``training_step``; then, after
    backward, either :meth:`check` (host decision, drops the gradients) or :meth:`verdict` (device
    decision for an optimizer that takes ``found_inf``) followed by :meth:`review` now and then.
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
        self._pending: list[_PendingVerdict] = []

    def note_batch(self, loss: torch.Tensor, keys: Sequence[str] | None) -> None:
        """Remember the batch's loss (no device sync here)."""
        self._loss = loss.detach()
        self._keys = list(keys or [])

    @property
    def last_loss(self) -> torch.Tensor | None:
        """The loss of the latest batch (on its device)."""
        return self._loss

    # ---- host decision ------------------------------------------------------------------
    def check(
        self, parameters: Iterable[torch.nn.Parameter], global_step: int, *, clear_gradients: bool = True
    ) -> bool:
        """True if this step is skipped; raises :class:`NonFiniteTrainingError` after too many in a row.

        One host sync. With ``clear_gradients`` the gradients are checked too and, on a skip,
        dropped so that the optimizer changes nothing.
        """
        with_grad = [p for p in parameters if p.grad is not None]
        finite = self._finite_flags(with_grad if clear_gradients else [])
        loss_ok, grads_ok = (bool(flag) for flag in finite.tolist())
        skip = self._record(global_step + 1, self._keys, loss_ok, grads_ok)
        if skip and clear_gradients:
            for parameter in with_grad:
                parameter.grad = None
        return skip

    # ---- device decision ----------------------------------------------------------------
    def verdict(self, parameters: Iterable[torch.nn.Parameter], global_step: int) -> torch.Tensor:
        """A 0-d float tensor on the parameters' device, 1.0 when this step must be skipped.

        No host sync: hand it to a fused optimizer as ``found_inf``; :meth:`review` reads it later.
        """
        with_grad = [p for p in parameters if p.grad is not None]
        finite = self._finite_flags(with_grad)
        self._pending.append(_PendingVerdict(global_step + 1, self._keys, finite))
        return (~finite.all()).float()

    def review(self) -> list[int]:
        """Read the verdicts since the last review (one host sync); returns the steps skipped.

        Counts them and raises :class:`NonFiniteTrainingError` when too many came in a row.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return []
        flags = torch.stack([verdict.finite.to(pending[0].finite.device) for verdict in pending]).tolist()
        skipped = []
        for verdict, (loss_ok, grads_ok) in zip(pending, flags):
            if self._record(verdict.step, verdict.keys, bool(loss_ok), bool(grads_ok)):
                skipped.append(verdict.step)
        return skipped

    # ---- shared -------------------------------------------------------------------------
    def _finite_flags(self, with_grad: Sequence[torch.nn.Parameter]) -> torch.Tensor:
        """``[loss finite, gradients finite]`` as a device bool tensor (true where nothing was given)."""
        device = with_grad[0].device if with_grad else (self._loss.device if self._loss is not None else None)
        loss_ok = (
            torch.isfinite(self._loss).all()
            if self._loss is not None
            else torch.ones((), dtype=torch.bool, device=device)
        )
        grads_ok = gradients_finite(with_grad) if with_grad else torch.ones((), dtype=torch.bool, device=device)
        return torch.stack([loss_ok.to(grads_ok.device), grads_ok])

    def _record(self, step: int, keys: list[str], loss_ok: bool, grads_ok: bool) -> bool:
        """Count one step's verdict; True if it was skipped."""
        if loss_ok and grads_ok:
            self.consecutive = 0
            self._failed_steps = []
            return False
        problem = "loss is not finite" if not loss_ok else "a gradient is not finite"
        self.skipped += 1
        self.consecutive += 1
        self._failed_steps.append(step)
        self.last_problem = f"{problem} (batch keys: {format_keys(keys)})"
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"non-finite loss or gradients in {self.consecutive} consecutive steps "
                f"({self._failed_steps[0]}..{step}); last: {self.last_problem}; stopping "
                f"(optim.max_nonfinite_steps={self.max_consecutive})"
            )
        return True


def optimizer_skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer.step`` honours a ``found_inf`` tensor (torch's fused Adam/AdamW/SGD)."""
    fused = any(group.get("fused") for group in optimizer.param_groups)
    return bool(fused and getattr(optimizer, "_step_supports_amp_scaling", False))


def gradients_finite(parameters: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """A 0-d bool tensor, no host sync: one fused norm per device; a non-finite element makes its norm non-finite."""
    norms = torch._foreach_norm([p.grad for p in parameters])  # type: ignore[misc]
    return torch.isfinite(torch.stack([n.float().to(norms[0].device) for n in norms])).all()


def format_keys(keys: Sequence[str], limit: int = 8) -> str:
    if not keys:
        return "unknown"
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
