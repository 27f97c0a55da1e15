"""Stop, or skip, a training step whose loss or gradients are not finite.

``nonfinite: stop`` (the default): the first optimiser step with a NaN/inf loss or
gradient raises :class:`NonFiniteError`, whose message names the step and the
first parameter (in module order) with a non-finite gradient. The check runs in
``on_before_optimizer_step``, after backward and before the optimiser touches the
weights, so the weights (and any checkpoint written later) are never those of a bad
step; the run's last checkpoint stays the last good one.

``nonfinite: skip``: such a step is dropped instead (every gradient set to None, so
the optimiser changes neither weights nor its own state for it); the count and the
first few steps skipped go into ``summary.json`` under ``nonfinite``.

Under DDP the decision is collective: a process may see a non-finite loss that the
others do not (DDP averages the gradients, not the losses), so every process sends what
it found to all the others (one all-reduce of a vector with one entry per rank) and all
of them stop, or skip, the same step. Each process's message names the processes that
saw it (``non-finite loss (nan) on process 1 at step 7 ...``); a skipped step's record
lists them under ``processes``. A process that decided alone would step while another
stopped (the next all-reduce then hangs or fails) or skipped (the weights of the
processes drift apart for good).

The decision costs one device synchronisation per step. With a gradient scaler
(``precision=16-mixed`` on CUDA) inf gradients are the scaler's business (it skips
the step and lowers the scale); only the loss is checked then.
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

MODES = ("stop", "skip")
RECORDED_SKIPS = 20  # how many skipped steps summary.json lists (the count covers all)
CODES = {1: "loss", 2: "gradient", 3: "loss and gradient"}  # what a process found non-finite


class NonFiniteError(RuntimeError):
    """Training hit a NaN/inf loss or gradient with ``nonfinite=stop``."""


class NonFiniteGuard(L.Callback):
    def __init__(self, mode: str = "stop"):
        if mode not in MODES:
            raise ValueError(f"nonfinite={mode!r}: must be one of {', '.join(MODES)}")
        self.mode = mode
        self.skipped_steps = 0
        self.skipped: list[dict] = []
        self._loss_finite: torch.Tensor | None = None  # over the micro-batches of the coming step
        self._loss: torch.Tensor | None = None
        self._batch = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch = batch_idx

    def on_before_backward(self, trainer, pl_module, loss):
        finite = torch.isfinite(loss.detach()).all()  # stays on the device: no synchronisation here
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        loss_finite, self._loss_finite = self._loss_finite, None
        named = [(name, p.grad) for name, p in pl_module.named_parameters() if p.grad is not None]
        check_grads = getattr(trainer.precision_plugin, "scaler", None) is None
        grads_finite = [torch.isfinite(grad).all() for _, grad in named] if check_grads else []
        flags, seen_on = self._flags_and_processes(trainer, pl_module.device, loss_finite, grads_finite)
        if not seen_on:
            return
        loss_ok = flags[-1]
        first = next((name for (name, _), ok in zip(named, flags[:-1]) if not ok), None)
        where = self._describe(trainer, loss_ok, first, seen_on)
        if self.mode == "stop":
            raise NonFiniteError(f"{where}; stopped before the optimiser step, so the weights are those "
                                 f"after the last good step (nonfinite=skip skips such steps instead)")
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None  # the optimiser skips parameters without a gradient
        self.skipped_steps += 1
        if len(self.skipped) < RECORDED_SKIPS:
            self.skipped.append({"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": self._batch,
                                 "loss_finite": loss_ok, "first_nonfinite_grad": first, "processes": sorted(seen_on)})
        rank_zero_warn(f"{where}: step skipped (nonfinite=skip)", category=NonFiniteWarning)

    @staticmethod
    def _flags_and_processes(trainer, device, loss_finite, grads_finite) -> tuple[list[bool], dict[int, str]]:
        """This process's flags (each gradient's, the loss's last; True = finite) and, the same on every
        process, what was non-finite where: ``{rank: "loss" | "gradient" | "loss and gradient"}``.

        A collective under DDP, called by every process at every step: each process puts its code
        (1 loss, 2 gradient, 3 both) at its own rank of a zero vector and one all-reduce (sum) hands
        every process every code. Its ``.cpu()`` is the step's one device synchronisation."""
        finite = torch.ones((), dtype=torch.bool, device=device)
        local = torch.stack([*grads_finite, finite if loss_finite is None else loss_finite])
        code = (~local[-1]).to(torch.int32) + 2 * (~local[:-1].all()).to(torch.int32)
        codes = torch.zeros(trainer.world_size, dtype=torch.int32, device=device)
        codes[trainer.global_rank] = code
        codes = trainer.strategy.reduce(codes, reduce_op="sum")
        values = torch.cat([local.to(torch.int32), codes]).cpu().tolist()
        flags, codes = values[:len(local)], values[len(local):]
        return [bool(flag) for flag in flags], {rank: CODES[code] for rank, code in enumerate(codes) if code}

    def _describe(self, trainer, loss_ok: bool, first: str | None, seen_on: dict[int, str]) -> str:
        step = (f"step {trainer.global_step} (global step, counted from 0; epoch {trainer.current_epoch}, "
                f"batch {self._batch})")
        parts = [] if loss_ok else [f"loss ({self._loss.float().mean().item():g})"]
        if first is not None:
            parts.append(f"gradient (first non-finite: {first})")
        what = " and ".join(parts) or " / ".join(dict.fromkeys(seen_on.values()))  # only others saw it
        if trainer.world_size > 1:
            what += f" on process{'es' if len(seen_on) > 1 else ''} {', '.join(map(str, seen_on))}"
        return f"non-finite {what} at {step}"

    def summary_fields(self) -> dict:
        """What summary.json records: the mode, how many steps were skipped, the first of them."""
        return {"nonfinite": {"mode": self.mode, "skipped_steps": self.skipped_steps, "skipped": self.skipped}}


class NonFiniteWarning(UserWarning):
    """A training step was skipped because of a NaN/inf loss or gradient (``nonfinite=skip``)."""
