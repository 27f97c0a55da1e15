"""Probes drawn in chunks are independent across chunks: chunking changes memory, never the variance.

The estimator draws a call's probes in chunks (xconv/estimator.py) when all of them at once would
rival the input. Each chunk has its own seed; were every chunk to repeat the first chunk's probes,
the estimate would stay unbiased, but with r probes in chunks of one it would have the variance of a
single probe: r times larger. The test compares the total variance (summed over the layer's 108
weights) of chunked and unchunked estimates over 64 seeds. For one weight the ratio of sample
variances follows F(63, 63) times the true ratio, which exceeds 3 (or falls below 1/3) with
probability below 1e-5 when chunks are independent (true ratio 1) and reaches 3 with probability
below 1e-9 when they repeat (true ratio 16); the sum over weights is more concentrated still.
Measured: 1.00 as the code is, 17.0 with every chunk repeating the first (the mutant
``reuse-probes-across-chunks`` of scripts/mutants.py).
"""
import pytest
import torch

import xconv
import xconv.estimator as estimator

SEEDS, PROBES = 64, 16


def total_variance(chunked: bool, monkeypatch) -> float:
    if chunked:  # one probe per chunk
        monkeypatch.setattr(estimator, "_CHUNK_FLOOR_ELEMENTS", 1)
        monkeypatch.setattr(estimator, "_CHUNK_FRACTION_OF_INPUT", 10**9)
    torch.manual_seed(0)
    layer = xconv.XConv2d(3, 4, 3, padding=1, probes=PROBES).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    g = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    estimates = []
    for seed in range(SEEDS):
        xconv.manual_seed(seed)
        layer.weight.grad = None
        (layer(x) * g).sum().backward()
        estimates.append(layer.weight.grad.clone())
    monkeypatch.undo()
    return torch.stack(estimates).var(dim=0).sum().item()


def test_chunk_of_one_probe_each_really_chunks(monkeypatch):
    monkeypatch.setattr(estimator, "_CHUNK_FLOOR_ELEMENTS", 1)
    monkeypatch.setattr(estimator, "_CHUNK_FRACTION_OF_INPUT", 10**9)
    assert estimator._chunk_size(PROBES, 64, 2 * 3 * 64) == 1


def test_chunked_probes_give_the_variance_of_unchunked_ones(monkeypatch):
    ratio = total_variance(True, monkeypatch) / total_variance(False, monkeypatch)
    assert 1 / 3 < ratio < 3, ratio
