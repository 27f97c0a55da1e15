"""An autouse fixture: one torch thread for the tests of the module that imports it.

Their tensors are tiny; on two shared cores torch's OpenMP threads mostly wait for each other
(measured here: the chunked-unbiasedness tests of test_layers.py take 41 s with torch's two
threads under load, 2.8 s with one). Import it with
``from single_thread import one_torch_thread  # noqa: F401`` to use it.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
