"""Shared by every test folder: a fixed torch seed before each test.

The suite is split by layer: ``xconv/`` (the library; torch and pytest only),
``harness/`` (tasks, data, models, the ``python -m xconv.run`` entry) and ``scripts/``
(the results scripts and their studies).
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
