"""``python -m xconv.run`` with faults for tests: ``python hooked_run.py <overrides>`` runs the real
harness (:func:`xconv_harness.run.main`) with one more Lightning callback, configured by environment
variables, which DDP children inherit (they re-run this file: ``ddp_launch.ddp_child_command`` runs
``sys.argv[0]``). Test code only; nothing in the harness knows about it.

* ``XCONV_TEST_SIGKILL=<key>=<value>@<step>``: the job whose config has ``<key>`` equal to
  ``<value>`` SIGKILLs its own process before training step ``<step>`` (as the out-of-memory killer would).
* ``XCONV_TEST_NAN_LOSS=<rank>@<step>``: at global step ``<step>`` the loss of process ``<rank>``
  reads NaN while its gradients stay finite (only that process sees anything wrong).
* ``XCONV_TEST_RECORD=1``: every process writes ``weights-rank<r>.pt`` (its final weights) and
  ``exit-rank<r>.txt`` (its exit code) into the run folder.

:func:`run_hooked` runs it in a new session and, on a timeout, kills the whole session (DDP children too).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

KILL, NAN_LOSS, RECORD = "XCONV_TEST_SIGKILL", "XCONV_TEST_NAN_LOSS", "XCONV_TEST_RECORD"
_process: dict = {}  # this process's rank and run folder, once training starts


def _fault_at(name: str) -> tuple[str, int] | None:
    """``(what, step)`` of fault variable ``name`` (``what@step``); None if it is not set."""
    if not os.environ.get(name):
        return None
    what, step = os.environ[name].rsplit("@", 1)
    return what, int(step)


def faults_callback(cfg, out_dir: Path):
    from lightning.pytorch import Callback
    from omegaconf import OmegaConf

    class Faults(Callback):
        def on_fit_start(self, trainer, pl_module):
            _process.update(rank=trainer.global_rank, out_dir=Path(out_dir))
            nan = _fault_at(NAN_LOSS)
            if nan is not None and int(nan[0]) == trainer.global_rank:
                train_step = pl_module.training_step

                def poisoned(*args, **kwargs):
                    loss = train_step(*args, **kwargs)
                    return loss + loss.detach() * math.nan if pl_module.global_step == nan[1] else loss
                pl_module.training_step = poisoned

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            kill = _fault_at(KILL)
            if kill is not None and trainer.global_step == kill[1]:
                key, value = kill[0].split("=", 1)
                if str(OmegaConf.select(cfg, key)) == value:
                    os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, trainer, pl_module):
            if os.environ.get(RECORD):
                import torch

                torch.save(pl_module.state_dict(), Path(out_dir) / f"weights-rank{trainer.global_rank}.pt")

    return Faults()


def main() -> None:
    import xconv_harness.run as harness

    build_callbacks = harness.build_callbacks
    harness.build_callbacks = lambda cfg, out_dir: [*build_callbacks(cfg, out_dir), faults_callback(cfg, out_dir)]
    code = 0
    try:
        harness.main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        raise
    finally:
        if os.environ.get(RECORD) and _process:
            (_process["out_dir"] / f"exit-rank{_process['rank']}.txt").write_text(f"{code}\n")


def run_hooked(folder: Path, *overrides: str, faults: dict[str, str], multirun: bool = False,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """This file as the harness CLI in a subprocess (run folder, or sweep folder with ``multirun``)."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", **faults)
    where = f"hydra.sweep.dir={folder}" if multirun else f"hydra.run.dir={folder}"
    command = [sys.executable, __file__, *(["-m"] if multirun else []), where, *overrides]
    with subprocess.Popen(command, cwd=folder.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of its session (DDP children)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


if __name__ == "__main__":
    main()
