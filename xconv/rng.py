"""XConv's own random numbers, kept apart from torch's global generator.

Each XConv forward call takes a fresh 62-bit *call seed* from XConv's own stream
and keeps only that integer for backward; the probes are drawn from a per-device
generator reseeded with it, once in forward and again in backward. The user's
global stream (dropout masks, data order, augmentation) is never read from or
advanced.

The call-seed stream is counter-based and pure Python: the ``n``-th seed is
SplitMix64 of ``key + n * golden_gamma`` (Steele, Lea and Flood 2014), ``key``
a mix of the seed. Drawing one reads no tensor, so XConv runs under
``FakeTensorMode`` (:mod:`xconv.fake_peak`) and under tracing exactly as it
runs eagerly, and the state is two integers.

Reproducibility: importing xconv wraps ``torch.manual_seed`` so that seeding
torch (directly, or through Lightning's ``seed_everything``) also seeds XConv's
stream from the same number. ``xconv.manual_seed`` seeds XConv alone, and
``get_rng_state``/``set_rng_state`` save and restore it (for resuming runs).

State format (``get_rng_state``): an int64 tensor ``[FORMAT_TAG, key, count]``
(``key`` as a signed 64-bit integer), loadable with ``torch.load(...,
weights_only=True)``. Versions before it stored the state of a CPU
``torch.Generator`` (a uint8 tensor); ``set_rng_state`` still takes one and then
continues that old stream seed for seed (:data:`LEGACY` below), so checkpoints
written before the change resume exactly as they would have; ``manual_seed``
returns to the counter-based stream. Anything else is refused with a
``ValueError`` that says what was expected.
"""
from __future__ import annotations

import functools
import threading

import torch
from torch.utils._python_dispatch import _disable_current_modes

__all__ = ["manual_seed", "get_rng_state", "set_rng_state", "next_call_seed", "probe_generator",
           "FORMAT_TAG", "SEED_BITS"]

_SALT = 0x5EED_C0DE_1234  # keeps XConv's stream distinct from torch's own for the same seed
SEED_BITS = 62  # call seeds lie in [0, 2**62)
_SEED_BOUND = 2**SEED_BITS
_MASK64 = 2**64 - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2**64 / golden ratio, odd)
#: First entry of every state tensor: "XCONV" in ASCII, then the format version (1).
FORMAT_TAG = 0x58434F4E56_0001
_LEGACY_STATE_BYTES = 5056  # torch's CPU generator (mt19937) state, the format before FORMAT_TAG


def _mix64(z: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit integers that scatters every input bit."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _CallSeedStream:
    """``next()`` returns ``mix64(key + (count + 1) * gamma) >> 2`` and advances ``count``.

    ``legacy``: after ``set_rng_state`` with a pre-FORMAT_TAG state, the old CPU generator,
    which then supplies the seeds (as the old code drew them) until the next ``seed``.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()  # DataParallel calls layers from several threads
        self.key, self.count = 0, 0
        self.legacy: torch.Generator | None = None

    def seed(self, seed: int) -> None:
        with self.lock:
            self.key, self.count, self.legacy = _mix64((int(seed) ^ _SALT) & _MASK64), 0, None

    def next(self) -> int:
        with self.lock:
            if self.legacy is not None:
                with _disable_current_modes():  # a real draw even under FakeTensorMode
                    return int(torch.randint(_SEED_BOUND, (1,), generator=self.legacy).item())
            self.count += 1
            return _mix64((self.key + self.count * _GAMMA) & _MASK64) >> (64 - SEED_BITS)


_stream = _CallSeedStream()
_stream.seed(torch.initial_seed())
_probe_generators: dict[torch.device, torch.Generator] = {}


def manual_seed(seed: int) -> None:
    """Seed XConv's stream (torch's global generator is left alone)."""
    _stream.seed(seed)


def get_rng_state() -> torch.Tensor:
    """State of XConv's stream, to store in a checkpoint: see the module docstring for the format."""
    with _stream.lock, _disable_current_modes():  # a real tensor, also under FakeTensorMode
        if _stream.legacy is not None:
            return _stream.legacy.get_state()
        key = _stream.key - 2**64 if _stream.key >= 2**63 else _stream.key
        return torch.tensor([FORMAT_TAG, key, _stream.count], dtype=torch.int64)


def set_rng_state(state: torch.Tensor) -> None:
    """Restore a state returned by :func:`get_rng_state` (of this version, or an older one)."""
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"XConv's RNG state must be a tensor from xconv.get_rng_state(), got {type(state).__name__}")
    with _stream.lock, _disable_current_modes():
        state = state.detach().cpu()
        if state.dtype == torch.int64 and state.shape == (3,) and int(state[0]) == FORMAT_TAG:
            _, key, count = (int(v) for v in state)
            if count < 0:
                raise ValueError(f"XConv's RNG state has a negative count {count}")
            _stream.key, _stream.count, _stream.legacy = key & _MASK64, count, None
        elif state.dtype == torch.uint8 and state.shape == (_LEGACY_STATE_BYTES,):
            legacy = torch.Generator(device="cpu")
            legacy.set_state(state)
            _stream.legacy = legacy
        else:
            raise ValueError(
                f"not an XConv RNG state: expected an int64 tensor [{FORMAT_TAG:#x}, key, count] from "
                f"xconv.get_rng_state(), or the uint8 tensor of {_LEGACY_STATE_BYTES} bytes older versions "
                f"stored; got dtype {state.dtype}, shape {tuple(state.shape)}")


def next_call_seed() -> int:
    """A fresh seed in ``[0, 2**62)`` for one layer call; advances XConv's stream only, reads no tensor."""
    return _stream.next()


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
