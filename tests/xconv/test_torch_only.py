"""tests/xconv runs with nothing but torch and pytest installed.

Every module of this folder (and the shared tests/conftest.py) imports only the
standard library, torch, pytest, xconv and the helper modules of this folder;
imports inside functions count too. Tests of torchvision, smp or harness models
belong in tests/harness.
"""
import ast
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = sorted(HERE.glob("*.py")) + [HERE.parent / "conftest.py"]
ALLOWED = {"torch", "pytest", "xconv", *sys.stdlib_module_names, *(path.stem for path in HERE.glob("*.py"))}


def foreign_imports(source: str) -> list[str]:
    """Top-level names of the modules ``source`` imports that are not in ``ALLOWED``."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
    return [name for name in names if name.split(".")[0] not in ALLOWED]


def test_library_tests_import_only_torch_pytest_and_the_standard_library():
    found = {path.name: foreign_imports(path.read_text()) for path in FILES}
    assert {name: imports for name, imports in found.items() if imports} == {}


def test_the_check_sees_imports_inside_functions():
    source = "import torch\nimport torchvision.models\ndef f():\n    from xconv_harness.models import unet\n"
    assert foreign_imports(source) == ["torchvision.models", "xconv_harness.models"]
