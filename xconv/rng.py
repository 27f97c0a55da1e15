"""XConv's own random numbers, kept apart from torch's global generator.

Each XConv forward call draws a fresh 62-bit *call seed* from a dedicated CPU
generator and keeps only that integer for backward; the probes are drawn from a
per-device generator reseeded with it, once in forward and again in backward.
The user's global stream (dropout masks, data order, augmentation) is never
read from or advanced.

Reproducibility: importing xconv wraps ``torch.manual_seed`` so that seeding
torch (directly, or through Lightning's ``seed_everything``) also seeds XConv's
generator from the same number. ``xconv.manual_seed`` seeds XConv alone, and
``get_rng_state``/``set_rng_state`` save and restore it (for resuming runs).
"""
from __future__ import annotations

import functools

import torch

_SALT = 0x5EED_C0DE_1234  # keeps XConv's stream distinct from torch's own for the same seed
_SEED_BOUND = 2**62

_call_seed_generator = torch.Generator(device="cpu")
_call_seed_generator.manual_seed(torch.initial_seed() ^ _SALT)
_probe_generators: dict[torch.device, torch.Generator] = {}


def manual_seed(seed: int) -> None:
    """Seed XConv's generator (torch's global generator is left alone)."""
    _call_seed_generator.manual_seed(int(seed) ^ _SALT)


def get_rng_state() -> torch.Tensor:
    """State of XConv's generator, to store in a checkpoint."""
    return _call_seed_generator.get_state()


def set_rng_state(state: torch.Tensor) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _call_seed_generator.set_state(state)


def next_call_seed() -> int:
    """A fresh seed for one layer call; advances XConv's generator only."""
    return int(torch.randint(_SEED_BOUND, (1,), generator=_call_seed_generator).item())


def probe_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator for ``device``, reseeded with ``seed`` (cached per device)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    generator = _probe_generators.get(device)
    if generator is None:
        generator = _probe_generators[device] = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _wrap_torch_manual_seed() -> None:
    original = torch.random.manual_seed
    if getattr(original, "_xconv_wrapped", False):
        return

    @functools.wraps(original)
    def manual_seed_and_xconv(seed):
        result = original(seed)
        manual_seed(seed)
        return result

    manual_seed_and_xconv._xconv_wrapped = True
    torch.random.manual_seed = manual_seed_and_xconv
    torch.manual_seed = manual_seed_and_xconv


_wrap_torch_manual_seed()
