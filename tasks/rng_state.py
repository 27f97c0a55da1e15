"""Every random stream a training step reads, captured per process for checkpoints.

A resumed run continues exactly where the interrupted one stopped only if each
stream continues too: torch's global generator (dropout, diffusion noise, data
augmentation in the main process), CUDA's, NumPy's and Python's global ones, and
XConv's own generator (the probes). :func:`capture` returns them as tensors and
plain numbers, so checkpoints stay loadable with ``torch.load(weights_only=True)``.

Under DDP every process has its own streams (XConv's is offset by the rank, see
:func:`offset_xconv_seed`); :func:`gather` collects them from all ranks into the
checkpoint that rank 0 writes, and :func:`restore_for_this_rank` gives each rank its own back.
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import torch
import torch.distributed as dist

import xconv

RANK_SEED_STRIDE = 1_000_003  # a prime: rank r's XConv stream is seeded with seed + r * stride


def capture() -> dict:
    """The current state of every global random stream of this process."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "xconv": xconv.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore(states: dict) -> None:
    """Set every stream saved by :func:`capture`."""
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    xconv.set_rng_state(states["xconv"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather() -> list[dict]:
    """:func:`capture` of every rank, in rank order (a collective under DDP: call it on all ranks)."""
    states = capture()
    if not _distributed():
        return [states]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, states)
    return gathered


def restore_for_this_rank(saved: list[dict]) -> None:
    """Restore this process's entry of a :func:`gather` list.

    If the number of processes changed, every rank takes rank 0's streams and ranks > 0
    reseed XConv with their offset: the run goes on, but not bit-for-bit as before.
    """
    world_size, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
    if len(saved) == world_size:
        restore(saved[rank])
        return
    warnings.warn(f"the checkpoint holds the random states of {len(saved)} processes, this run has "
                  f"{world_size}: resuming from rank 0's, so the run will not match an uninterrupted one")
    restore(saved[0])
    offset_xconv_seed(torch.initial_seed(), rank)


def offset_xconv_seed(seed: int, rank: int) -> None:
    """Give process ``rank`` its own XConv stream (rank 0 keeps the single-process one)."""
    if rank:
        xconv.manual_seed(seed + rank * RANK_SEED_STRIDE)
