"""Shared by every test folder: a fixed torch seed before each test, and subnormal floats kept after it
(a harness run in the test process turns on ``torch.set_flush_denormal``, a process-wide setting).

The suite is split by layer: ``xconv/`` (the library; torch and pytest only),
``harness/`` (tasks, data, models, the ``python -m xconv.run`` entry) and ``scripts/``
(the results scripts and their studies).
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
    yield
    torch.set_flush_denormal(False)
