"""Checkpoints of a run folder and what a resumed run needs to find in it.

Layout of a run folder (``out_dir``)::

    checkpoints/last.ckpt   model, optimiser, scheduler, loop position, data position and every
                            rank's random streams; rewritten every ``ckpt_every_n_steps`` optimiser
                            steps and when training ends (written atomically)
    wandb_run_id            the wandb run's id, so a resumed run logs into the same wandb run
    csv/metrics.csv         the first attempt's metrics; a resumed run writes csv/resume-<n>/

``ckpt_path``: ``null`` starts fresh; ``last`` resumes the run folder's
``checkpoints/last.ckpt`` and fails if there is none; ``auto`` resumes it if it exists and
starts fresh otherwise (for jobs a cluster may requeue); anything else is a checkpoint file.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
WANDB_ID_FILE = "wandb_run_id"
CKPT_MODES = ("last", "auto")


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` every ``every_n_train_steps`` optimiser steps (0: only at the end) and
    when training ends; no other checkpoint files. Resuming from it with a larger
    ``trainer.max_steps``/``max_epochs`` continues the run as if it had been that long from the start.

    A checkpoint is never taken between a training batch and the validation that follows it:
    Lightning would skip that validation on resume (its metrics, and the random numbers its
    loaders draw, would be missing), and a checkpoint taken at an epoch's end makes it re-run the
    epoch's end hooks without the validation metrics a plateau scheduler needs. A step checkpoint
    due on a batch that mid-epoch validation follows is written when that validation ends; one
    due on an epoch's last batch, after the next epoch's first batch.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0):
        super().__init__(dirpath=str(dirpath), save_top_k=0, save_last=True,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)
        self._after_validation = False  # a due checkpoint waits for the validation running now
        self._after_next_batch = False  # a due checkpoint waits for the next epoch's first batch

    def _save_last_now(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_global_step_saved = trainer.global_step  # the resumed-from state is on disk already
        if trainer.ckpt_path is not None:
            # A configure_optimizers that asks for trainer.estimated_stepping_batches sets the training
            # data up before Lightning restores the loops, and Lightning then never gives the loader
            # its saved position; give it now (a no-op if it was given; the loader starts lazily).
            trainer.fit_loop._load_combined_loader_states()
            # Lightning 2.6 keeps fit_loop.restarting set until the first resumed epoch ends and then
            # skips that epoch's epoch-level scheduler step (fit_loop.on_advance_end); the restart
            # stage is already decided here, so clearing the fit loop's own flag (not its children's)
            # makes the resumed epoch end like an uninterrupted one. Safe for our checkpoints, which
            # are never taken after an epoch's last batch.
            trainer.fit_loop._restarting = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self._every_n_train_steps
        # The last step of a max_steps run is saved here too: Lightning then ends the epoch early
        # (epoch-end hooks and schedulers), which a run that goes on later must not inherit.
        due = (bool(every) and trainer.global_step % every == 0) or 0 < trainer.max_steps <= trainer.global_step
        if not (due or self._after_next_batch):
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.batch_progress.is_last_batch:
            self._after_next_batch = True
        elif epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            self._after_validation, self._after_next_batch = True, False
        else:
            self._after_next_batch = False
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # see the class docstring

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._after_validation:
            self._after_validation = False
            self._save_last_now(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save_last_now(trainer)


def last_checkpoint(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / LAST


def resolve_ckpt_path(ckpt_path, out_dir: str | Path) -> str | None:
    """The checkpoint file ``trainer.fit`` resumes from (None: start fresh); ValueError naming
    ``ckpt_path`` if it names nothing that exists."""
    if ckpt_path is None:
        return None
    if not isinstance(ckpt_path, str) or not ckpt_path:
        raise ValueError(f"ckpt_path={ckpt_path!r}: must be null, last, auto or the path of a .ckpt file")
    if ckpt_path in CKPT_MODES:
        last = last_checkpoint(out_dir)
        if last.is_file():
            return str(last)
        if ckpt_path == "auto":
            return None
        raise ValueError(
            f"ckpt_path=last: no checkpoint {last} to resume. Point the run at the folder of the run to "
            f"resume: `ckpt_path=last hydra.run.dir=<that run's folder>` (or, for a multirun, "
            f"`-m ... hydra.sweep.dir=<that sweep's folder>` with the same sweep)")
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ValueError(f"ckpt_path={ckpt_path!r}: no such checkpoint file; use last, auto, null or the "
                         f"path of a .ckpt file")
    return str(path)


def wandb_run_id(out_dir: str | Path, resuming: bool) -> str:
    """The id of the run folder's wandb run: the stored one when resuming, else a new one (stored)."""
    from lightning.pytorch.utilities import rank_zero_only

    stored = Path(out_dir) / WANDB_ID_FILE
    if resuming and stored.is_file():
        return stored.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # wandb ids: letters and digits
    if rank_zero_only.rank == 0:
        stored.write_text(run_id + "\n")
    return run_id


def csv_version(out_dir: str | Path, resuming: bool) -> str:
    """CSVLogger version: "" (csv/ itself) for a fresh run, ``resume-<n>`` (the first free n) when
    resuming, so the interrupted attempt's metrics.csv is kept (CSVLogger deletes an existing one)."""
    if not resuming:
        return ""
    n = 1
    while (Path(out_dir) / "csv" / f"resume-{n}").exists():
        n += 1
    return f"resume-{n}"


def check_resume_settings(cfg) -> None:
    """ValueError naming ``ckpt_path`` if it names no checkpoint (its type and
    ``ckpt_every_n_steps`` are checked with every other key by tasks/schema.py)."""
    resolve_ckpt_path(cfg.get("ckpt_path"), cfg.out_dir)
