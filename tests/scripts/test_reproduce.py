"""scripts/reproduce.py: every listed command is one the harness accepts, and --list runs nothing."""
from __future__ import annotations

import subprocess
import sys

import pytest

from xconv_harness.cli_errors import first_problem
from xconv_harness.studies import reproduce


@pytest.mark.parametrize("table", list(reproduce.TABLES))
def test_every_sweep_of_every_table_is_accepted_by_the_harness(table):
    """The overrides of each sweep compose and validate (every swept value), as `python -m xconv.run -m` checks
    them before it makes a folder; an experiment file per table exists."""
    for command in reproduce.commands([table]):
        if "xconv.run" not in command:
            continue
        overrides = command[command.index("-m", 2) + 1:]
        assert first_problem(overrides, multirun=True) is None, (table, overrides)


def test_a_bad_override_in_a_sweep_would_be_caught():
    """The check above can fail: a sweep with a key the config lacks is refused."""
    assert first_problem(["experiment=cpu_segmentation", "prbes=0,16"], multirun=True) is not None


def test_list_prints_each_sweep_then_the_table_and_runs_nothing(tmp_path):
    out = subprocess.run([sys.executable, "scripts/reproduce.py", "--list", "--root", str(tmp_path), "cpu_segmentation"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    commands = [line for line in out if not line.startswith("#")]
    sweeps = reproduce.TABLES["cpu_segmentation"].sweeps
    assert len(commands) == len(sweeps) + 1
    assert all(line.startswith("python -m xconv.run -m experiment=cpu_segmentation") for line in commands[:-1])
    assert commands[-1] == f"python scripts/make_tables.py {tmp_path / 'cpu_segmentation'} --copy-runs"
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_table_is_refused_in_one_line():
    result = subprocess.run([sys.executable, "scripts/reproduce.py", "--list", "table9"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("reproduce.py: error: table=table9: not a table")


def test_a_finished_sweep_is_recognised_from_its_report(tmp_path):
    assert not reproduce.finished(tmp_path)
    (tmp_path / "multirun_report.json").write_text('{"jobs": 2, "completed": 1}')
    assert not reproduce.finished(tmp_path)
    (tmp_path / "multirun_report.json").write_text('{"jobs": 2, "completed": 2}')
    assert reproduce.finished(tmp_path)


def test_seeds_vary_slowest_so_a_stopped_sweep_leaves_whole_seeds():
    command = reproduce.sweep_command(reproduce.ROOT, "cpu_ddpm_mnist", reproduce.Sweep("x", ("probes=0,16", "seed=0,1,2")))
    swept = [part for part in command if "," in part]
    assert swept == ["seed=0,1,2", "probes=0,16"]


def test_table1_sweeps_train_the_papers_epochs_for_their_batch():
    """Paper Table 1: epochs = 10 + 2 log2(B) (20 at 32, 24 at 128, 30 at 1024); each sweep is one batch."""
    import math

    from xconv_harness.config_files import compose_experiment as compose

    for sweep in reproduce.TABLES["table1_mnist"].sweeps:
        fixed = tuple(o for o in sweep.overrides if "," not in o and not o.startswith("data.batch_size="))
        batches = [o.partition("=")[2].split(",") for o in sweep.overrides if o.startswith("data.batch_size=")]
        for batch in (batches[0] if batches else [None]):
            cfg = compose("table1_mnist", fixed + ((f"data.batch_size={batch}",) if batch else ()))
            expected = 10 + 2 * math.log2(cfg.data.batch_size)
            assert cfg.trainer.max_epochs == expected, (sweep.name, cfg.data.batch_size, cfg.trainer.max_epochs)
