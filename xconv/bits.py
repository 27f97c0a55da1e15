"""Packing small integer codes into bytes: what the low-memory savers keep for backward.

A saver that needs one bit per element (the sign of a ReLU's input, a dropout
mask) or a few bits (which of four pieces of a piecewise-constant derivative)
keeps ``ceil(numel * bits / 8)`` bytes instead of a float per element.

``pack_codes(codes, bits)`` takes an integer tensor with values in
``[0, 2**bits)`` (bits in 1, 2, 4, 8) and packs ``8 // bits`` codes per byte, the
first code in the lowest bits; ``unpack_codes(packed, bits, shape)`` inverts it.
Order is the flattened (row-major) order of ``codes``. Device-agnostic; no
data-dependent Python control flow, so both run under fake tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PACKABLE_BITS", "pack_codes", "unpack_codes", "pack_bits", "unpack_bits", "packed_bytes"]

PACKABLE_BITS = (1, 2, 4, 8)


def _check_bits(bits: int) -> int:
    if bits not in PACKABLE_BITS:
        raise ValueError(f"bits must be one of {PACKABLE_BITS}, got {bits!r}")
    return bits


def _shifts(bits: int, device) -> torch.Tensor:
    """Bit offset of each code inside its byte: ``0, bits, 2*bits, ...``."""
    return torch.arange(0, 8, bits, dtype=torch.uint8, device=device)


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes :func:`pack_codes` keeps for ``numel`` codes of ``bits`` bits."""
    per_byte = 8 // _check_bits(bits)
    return -(-numel // per_byte)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer ``codes`` (values in ``[0, 2**bits)``) into ``packed_bytes(numel, bits)`` uint8."""
    per_byte = 8 // _check_bits(bits)
    flat = codes.reshape(-1)
    # a bool mask is read as its bytes (0 or 1), not converted: one full-size temporary fewer
    flat = flat.view(torch.uint8) if flat.dtype == torch.bool else flat.to(torch.uint8)
    if per_byte == 1:
        return flat.clone()  # never a view of the caller's tensor
    flat = F.pad(flat, (0, -flat.numel() % per_byte))
    shifted = flat.view(-1, per_byte) << _shifts(bits, flat.device)  # each code moved to its place
    return shifted.sum(dim=1, dtype=torch.uint8)  # disjoint bits: the sum is a bitwise or


def unpack_codes(packed: torch.Tensor, bits: int, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: a uint8 tensor of ``shape``."""
    shape = torch.Size(shape)
    per_byte = 8 // _check_bits(bits)
    if per_byte == 1:
        return packed[: shape.numel()].view(shape)
    mask = (1 << bits) - 1
    codes = packed.unsqueeze(1) >> _shifts(bits, packed.device)  # (bytes, per_byte)
    codes &= mask  # in place: the codes are the only full-size temporary
    return codes.reshape(-1)[: shape.numel()].view(shape)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into ``ceil(numel / 8)`` bytes (flattened order)."""
    return pack_codes(mask, 1)


def unpack_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape`` (the unpacked 0/1 bytes read as bool, no copy)."""
    return unpack_codes(packed, 1, shape).view(torch.bool)
