"""How ``python -m xconv.run`` starts processes: DDP under Hydra, and resumed runs' Hydra files.

Part of the harness entry point (imported by :mod:`xconv.run` only; ``import xconv``
never loads it).

DDP (``trainer.strategy=ddp trainer.devices=N``): Lightning starts processes 1..N-1 by
re-running the command line. Under Hydra it re-runs ``sys.argv`` plus a
``hydra.run.dir`` override, which breaks multiruns (every child would start the whole
sweep again, in the wrong folder). :func:`ddp_child_command` replaces it: a child runs
exactly the job of its parent (that job's overrides, also inside a multirun) as a single
run in the parent's run folder, and writes no ``.hydra`` files of its own. After a DDP
job, :func:`ddp_job` leaves the launching process as it found it (process group and the
environment variables Lightning set), so the next job of a multirun starts its own
processes.

Resuming into an existing run folder would overwrite its ``.hydra/`` files (config,
overrides) with the resumed run's; ``hydra.output_subdir`` resolves through
:func:`hydra_subdir`, so a resumed run writes them to ``.hydra/resume-<time>/`` instead.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra's command-line flags that choose the config; a DDP child needs them as given.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def hydra_subdir(ckpt_path, output_dir) -> str:
    """``hydra.output_subdir``: ``.hydra``, or ``.hydra/resume-<time>`` for a resuming run whose
    folder already holds the first attempt's ``.hydra/config.yaml``."""
    if ckpt_path is not None and (Path(str(output_dir)) / ".hydra" / "config.yaml").is_file():
        return f".hydra/resume-{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}"
    return ".hydra"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("xconv_hydra_subdir", hydra_subdir, use_cache=True, replace=True)


def _config_flags(argv: list[str]) -> list[str]:
    """The config-choosing flags of ``argv`` with their values (``-cn x`` and ``--config-name=x``)."""
    kept, index = [], 0
    while index < len(argv):
        arg = argv[index]
        if arg in CONFIG_FLAGS and index + 1 < len(argv):
            kept += argv[index:index + 2]
            index += 1
        elif arg.split("=", 1)[0] in CONFIG_FLAGS:
            kept.append(arg)
        index += 1
    return kept


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """Command and working directory of DDP process ``local_rank`` (Lightning's launcher hook)."""
    import __main__
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    config = HydraConfig.get()
    if getattr(__main__, "__spec__", None) is not None:
        command = [sys.executable, "-m", __main__.__spec__.name]
    else:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    run_dir = str(config.runtime.output_dir).replace('"', '\\"')
    command += [*_config_flags(sys.argv[1:]), *config.overrides.task, f'hydra.run.dir="{run_dir}"',
                f"hydra.job.name=train_ddp_process_{local_rank}", "hydra.output_subdir=null"]
    return command, get_original_cwd()


def use_ddp_child_command() -> None:
    """Make Lightning's DDP launcher start children with :func:`ddp_child_command`."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        raise RuntimeError("this Lightning version has no lightning.pytorch.strategies.launchers."
                           "subprocess_script._hydra_subprocess_cmd; xconv_harness.ddp_launch needs updating")
    subprocess_script._hydra_subprocess_cmd = ddp_child_command


@contextlib.contextmanager
def ddp_job():
    """Run one job; afterwards close its process group and drop the DDP variables it set."""
    before = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if before["LOCAL_RANK"] is None:  # this process launched the job's DDP processes
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
