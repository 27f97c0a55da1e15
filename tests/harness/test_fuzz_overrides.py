"""Random invalid overrides, from a fixed seed: each is refused before training with one line naming the key.

The bulk runs in-process: one composed config per task, each override applied with Hydra's
own parser and override logic, then the harness's validation. Mistakes Hydra itself refuses
(an unknown group option, an unknown key, bad syntax, a missing or superfluous ``+``, a
value of the wrong type, several values without ``-m``) and an unknown encoder go through the
command-line check (tasks/cli_errors.py) in-process, a fixed-seed sample by default and all
of them under ``slow``. A few go through the real CLI: exit code 2, exactly one
``error: <key>=...`` line, no traceback, no run folder.
"""
import copy
import os
import random
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.errors import ConfigCompositionException
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from cli_runs import run_cli
from xconv_harness import schema
from xconv_harness.cli_errors import first_problem
from xconv_harness.validate import ConfigError, validate
from xconv_harness.config_files import CONFIG_DIR

TASKS = ["classification", "generative", "segmentation", "superres", "inpainting"]
SEED = 20260426
# Invalid values by the type of a key's default; a key's own exceptions below.
BAD_VALUES = {
    int: ["abc", "2.5", "-7", "[1,2]", "true", "''", "{a: 1}"],
    float: ["abc", "nan", "inf", "-3.5", "[1.0]", "true", "''"],
    bool: ["abc", "1.5", "[true]", "''", "{a: 1}"],
    str: ["''", "[a,b]", "3.5", "{a: 1}"],
    list: ["abc", "5", "''", "{a: 1}"],
    type(None): ["{a: 1}", "[[1]]"],
}
NEGATIVE_ALLOWED = {"task.seed"}  # a task's own seed: any integer (the run's seed: 0 .. 2**32-1)
LIST_ALLOWED = {"trainer.devices"}  # a list of device indices
SKIPPED = {"out_dir"}  # ${hydra:...}: exists only inside a run


def leaves(node, prefix=""):
    """(dotted key, resolved default) of every setting."""
    for key in node.keys():
        path = f"{prefix}{key}"
        if path == "hydra" or path in SKIPPED:
            continue
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            yield from leaves(node[key], path + ".")
        else:
            resolved = node[key]
            yield path, OmegaConf.to_container(resolved) if isinstance(resolved, ListConfig) else resolved


def invalid_values(key: str, default) -> list[str]:
    values = list(BAD_VALUES[type(default)])
    if key in NEGATIVE_ALLOWED:
        values = [v for v in values if not v.startswith("-")]
    if key in LIST_ALLOWED:
        values = [v for v in values if not v.startswith("[")]
    return values


def fuzz_cases(configs: dict, per_key: int = 2) -> list[tuple[str, str, str]]:
    """``(task, override, key it must name)``: for every key of any task, ``per_key`` random invalid
    values on a random task that has it, plus unknown keys in every section."""
    rng = random.Random(SEED)
    where = {}
    for task, cfg in configs.items():
        for key, default in leaves(cfg):
            where.setdefault(key, []).append((task, default))
    cases = []
    for key in sorted(where):
        task, default = rng.choice(where[key])
        for value in rng.sample(invalid_values(key, default), per_key):
            cases.append((task, f"{key}={value}", key))
    for section in ["", "trainer.", "data.", "model.", "task.", "task.optimizer.", "task.scheduler.", "logger."]:
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(8)) + "x"
        cases.append((rng.choice(TASKS), f"+{section}{name}={rng.choice(['1', 'abc', '[1]'])}", section + name))
    for key in ["probes", "seed", "task.name", "data._target_", "logger.kind", "task.optimizer._target_"]:
        cases.append((rng.choice(TASKS), f"~{key}", key))  # deleting a key the harness needs
    return cases


@pytest.fixture(scope="module")
def configs():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return {task: compose(config_name="config", overrides=[f"task={task}"]) for task in TASKS}


def test_random_invalid_overrides_are_refused_naming_the_key(configs):
    parser = OverridesParser.create()
    cases = fuzz_cases(configs)
    assert len(cases) > 200
    accepted, unnamed, by_hydra = [], [], 0
    for task, override, key in cases:
        cfg = copy.deepcopy(configs[task])
        try:  # as the CLI does; Hydra itself refuses some (a mapping into a list, ...), naming the key
            ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides([override]), cfg)
        except ConfigCompositionException as error:
            by_hydra += 1
            if key not in str(error):
                unnamed.append((task, override, str(error)))
            continue
        try:
            validate(cfg)
        except ConfigError as error:
            message = str(error)
            if not message.startswith((f"{key}=", f"{key}:")) or "\n" in message:
                unnamed.append((task, override, message))
        else:
            accepted.append((task, override))
    assert not accepted, f"invalid overrides accepted: {accepted}"
    assert by_hydra < len(cases) / 10  # the harness's own validation refuses the bulk
    assert not unnamed, f"refused without naming the key on one line: {unnamed}"


def assert_one_error_line(result, key: str):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith((f"error: {key}=", f"error: {key}:")), result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_an_invalid_override_through_the_cli(tmp_path, configs):
    """One of the fuzz cases (fixed by the seed) through ``python -m xconv.run`` (tests/test_run.py
    sends six more, named)."""
    task, override, key = random.Random(SEED).choice([case for case in fuzz_cases(configs)
                                                      if not case[1].startswith("~")])
    result = run_cli(tmp_path / "run", f"task={task}", override)
    assert_one_error_line(result, key)
    assert not (tmp_path / "run").exists()  # validated before Hydra makes the run folder


# Hydra-level mistakes ---------------------------------------------------------------------------------
GROUPS = ["task", "data", "model", "logger", "experiment", "optimizer@task.optimizer", "scheduler@task.scheduler",
          "hydra/launcher"]
BAD_SYNTAX = ["[1", "{a", "a]", "(1", "'x", "1,", "${oops"]
HYDRA_TYPED = ["hydra.job.chdir", "hydra.mode", "hydra.job.config.override_dirname.kv_sep"]  # Hydra's typed keys
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _word(rng) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(7))


def _typo(rng, key: str, existing: set[str]) -> str:
    """``key`` with one letter of its last part dropped, doubled or changed: not a key of the config."""
    while True:
        section, _, leaf = key.rpartition(".")
        at = rng.randrange(len(leaf))
        leaf = rng.choice([leaf[:at] + leaf[at + 1:], leaf[:at] + leaf[at] + leaf[at:],
                           leaf[:at] + rng.choice(LETTERS) + leaf[at + 1:]]) or "x"
        typo = f"{section}.{leaf}" if section else leaf
        if typo not in existing and typo.split(".")[-1] not in ("", "_"):
            return typo


def hydra_mistakes(configs: dict) -> list[tuple[str, list[str], str]]:
    """``(kind, overrides, key the error must name)``: one mistake of each kind per task, drawn from a fixed seed."""
    rng = random.Random(SEED + 1)
    cases = []
    for task in TASKS:
        cfg = configs[task]
        keys = {key: value for key, value in leaves(cfg)}
        key = rng.choice(sorted(keys))
        typo = _typo(rng, key, set(keys))
        unset = sorted(set(schema.RULES) - set(keys) - {"hydra"})
        lists = sorted(k for k, value in keys.items() if isinstance(value, list))
        start = [f"task={task}"]
        cases += [
            ("unknown group option", [*start, f"{rng.choice(GROUPS)}={_word(rng)}"], None),
            ("unknown key without +", [*start, f"{typo}={rng.choice(['1', 'abc', '[1]'])}"], typo),
            ("deleting an unknown key", [*start, f"~{typo}"], typo),
            ("missing +", [*start, f"{rng.choice(unset)}=1"], None),
            ("superfluous +", [*start, f"+{key}=1"], key),
            ("bad syntax", [*start, f"{key}={rng.choice(BAD_SYNTAX)}"], key),
            ("several values without -m", [*start, f"{key}=1,2"], key),
            ("a mapping into a list", [*start, f"{rng.choice(lists)}={{a: 1}}"], None),
            ("a wrong type for Hydra", [*start, f"{rng.choice(HYDRA_TYPED)}={rng.choice(['abc', '[1]', '{a: 1}'])}"], None),
        ]
    cases.append(("unknown encoder", ["task=segmentation", f"model.encoder={_word(rng)}"], "model.encoder"))
    return [(kind, overrides, key or overrides[-1].split("=")[0].lstrip("+~")) for kind, overrides, key in cases]


def one_per_kind(cases: list, seed: int = SEED) -> list:
    """A fixed-seed sample: one case of every kind."""
    rng, kinds = random.Random(seed), {}
    for case in cases:
        kinds.setdefault(case[0], []).append(case)
    return [rng.choice(group) for group in kinds.values()]


def assert_names_the_key(message, key: str, case):
    assert message is not None, f"accepted: {case}"
    assert message.startswith((f"{key}=", f"{key}:")) and "\n" not in message, (case, message)


def check_hydra_mistakes(cases):
    for case in cases:
        assert_names_the_key(first_problem(case[1]), case[2], case)


def test_hydra_level_mistakes_are_refused_in_one_line_naming_the_key(configs):
    cases = hydra_mistakes(configs)
    assert len({kind for kind, _, _ in cases}) == 10
    check_hydra_mistakes(one_per_kind(cases))


@pytest.mark.slow
def test_every_hydra_level_mistake_is_refused_in_one_line_naming_the_key(configs):
    check_hydra_mistakes(hydra_mistakes(configs))


def assert_refused_by_the_cli(folder, case):
    result = run_cli(folder / "run", *case[1])
    assert_one_error_line(result, case[2])
    assert not any(folder.iterdir()), case  # no run folder, no outputs/


@pytest.mark.parametrize("kind", ["unknown group option", "bad syntax"])  # an unknown key: test_a_key_typo_...
def test_hydra_level_mistakes_through_the_cli(tmp_path, configs, kind):
    case = random.Random(SEED).choice([case for case in hydra_mistakes(configs) if case[0] == kind])
    assert_refused_by_the_cli(tmp_path, case)


@pytest.mark.slow
def test_every_kind_of_hydra_level_mistake_through_the_cli(tmp_path, configs):
    for index, case in enumerate(one_per_kind(hydra_mistakes(configs), seed=SEED + 2)):
        (tmp_path / str(index)).mkdir()
        assert_refused_by_the_cli(tmp_path / str(index), case)


def cli_in(folder, *overrides):
    """The CLI with Hydra's default run folder (outputs/...) under ``folder``."""
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "xconv.run", *overrides], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=env)


def test_missing_data_removes_the_run_folder_hydra_made(tmp_path):
    """Found while building (after Hydra made outputs/<task>/<time>/): the folders it made go again."""
    (tmp_path / "mine").mkdir()
    result = cli_in(tmp_path, "task=classification", f"data.source={tmp_path / 'nowhere'}",
                    f"data.root={tmp_path / 'cache'}")
    assert_one_error_line(result, "data.source")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine"]


def test_a_key_typo_is_refused_in_one_line_with_the_key_meant(tmp_path):
    result = cli_in(tmp_path, "prbes=3")
    assert_one_error_line(result, "prbes")
    assert "(did you mean probes?)" in result.stderr
    assert not any(tmp_path.iterdir())
