"""The installed layout and the import graph.

* The wheel installs two names, ``xconv`` (the library) and ``xconv_harness`` (the
  harness, with its Hydra configs), and a regular (non-editable) install runs the main
  job from any folder.
* Imports point one way: scripts -> harness -> library. No module of the project takes
  part in an import cycle, counting imports inside functions, and nothing that
  ``import xconv`` loads imports Hydra, Lightning, wandb, omegaconf or the harness.
* No test or script edits ``sys.path``.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from project_imports import import_graph, modules_of, reachable, strongly_connected

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"xconv": ROOT / "xconv", "xconv_harness": ROOT / "tasks"}
HARNESS_ONLY = ("hydra", "lightning", "pytorch_lightning", "omegaconf", "wandb", "torchvision", "torchmetrics",
                "segmentation_models_pytorch", "xconv_harness", "matplotlib", "skimage", "sklearn")


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGES)


def test_no_import_cycle(graph):
    cycles = [sorted(component) for component in strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def test_the_cycle_check_sees_function_level_imports(tmp_path):
    """A cycle closed only by an import inside a function is still found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import g\n")
    cycles = [c for c in strongly_connected(import_graph({"pkg": package})) if len(c) > 1]
    assert cycles == [{"pkg.a", "pkg.b"}]


def test_import_xconv_loads_torch_only_modules(graph):
    library = reachable(graph, "xconv")
    assert library, "the graph must contain the library"
    assert not any(module.startswith("xconv_harness") or module == "xconv.run" for module in library)
    offenders = {module: sorted(name for name in graph.external[module] if name.split(".")[0] in HARNESS_ONLY)
                 for module in library}
    assert {module: names for module, names in offenders.items() if names} == {}


def test_import_xconv_at_run_time():
    code = "import sys, xconv; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in loaded if name.split(".")[0] in HARNESS_ONLY] == []


def test_no_sys_path_edits_in_tests_or_scripts():
    found = []
    for folder in (ROOT / "tests", ROOT / "scripts"):
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text())
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr == "path"
                      and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert found == []


def test_scripts_are_thin_mains():
    """Every script hands over to a study module of the installed harness."""
    for path in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text())
        statements = [node for node in tree.body if not isinstance(node, ast.Expr)]  # docstring aside
        assert len(statements) <= 3, f"{path.name}: more than an import and a main() call"
        imported = [node.module for node in statements if isinstance(node, ast.ImportFrom)]
        assert imported == [f"xconv_harness.studies.{path.stem}"], path.name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the source (the build leaves ``build/`` in the tree it builds)."""
    folder, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "xconv", "tasks", "conf"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(folder), str(source)], check=True, capture_output=True, text=True, timeout=600)
    (path,) = folder.glob("xconv-*.whl")
    return path


def test_wheel_top_level_names_and_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"xconv", "xconv_harness"}
    packaged = {name for name in names if name.endswith((".py", ".yaml"))}
    expected = {f"xconv/{p.relative_to(ROOT / 'xconv')}" for p in (ROOT / "xconv").rglob("*.py")}
    expected |= {f"xconv_harness/{p.relative_to(ROOT / 'tasks')}" for p in (ROOT / "tasks").rglob("*.py")}
    expected |= {f"xconv_harness/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*")
                 if p.suffix in (".py", ".yaml")}
    assert packaged == expected  # every source file and config ships, nothing else


def test_regular_install_runs_the_main_job_from_another_folder(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    env = dict(os.environ, PYTHONPATH=str(target), WANDB_MODE="offline", WANDB_SILENT="true")
    where = subprocess.run([sys.executable, "-c", "import xconv, xconv_harness.config_files as c; "
                            "print(xconv.__file__); print(c.CONFIG_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(path).is_relative_to(target) for path in where), where  # the wheel's files, not the checkout
    result = subprocess.run([sys.executable, "-m", "xconv.run", "task=segmentation", "probes=16",
                             "trainer.fast_dev_run=true", "logger=none", "threads=1"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(elsewhere.glob("outputs/segmentation/*/summary.json"))
