"""Packing small integer codes into bytes: what the low-memory savers keep for backward.

A saver that needs one bit per element (the sign of a ReLU's input, a dropout
mask) or a few bits (which of four pieces of a piecewise-constant derivative)
keeps ``ceil(numel * bits / 8)`` bytes instead of a float per element.

``pack_codes(codes, bits)`` takes an integer tensor with values in
``[0, 2**bits)`` (bits in 1, 2, 4, 8) and packs ``8 // bits`` codes per byte, the
first code in the lowest bits; ``unpack_codes(packed, bits, shape)`` inverts it.
Order is the flattened (row-major) order of ``codes``. Device-agnostic; no
data-dependent Python control flow, so both run under fake tensors.
``where_bits(packed, values)`` is ``values`` where the bit is set and +0 elsewhere,
what the 1-bit savers' backward computes.

Single bits take shortcuts (on little-endian machines, where a tensor's bytes read
as int64 have byte ``i`` at bits ``8i .. 8i + 7``):

* **pack**: eight mask bytes ``b_0 .. b_7`` (each 0 or 1) read as one int64 ``w`` and
  multiplied by ``G = sum_{k=1..8} 2**(7k)``: the product's terms ``b_i 2**(8i + 7k)``
  sit at distinct bit positions (``8i + 7k = 8i' + 7k'`` needs ``i - i'`` a multiple
  of 7 and ``k - k'`` of 8), so nothing carries, and bit ``56 + i`` of the product
  (``k = 8 - i``) is ``b_i``: the high byte of ``w * G`` (int64 arithmetic wraps) is
  the packed byte. One multiply and one shift per eight codes.
* **unpack**: each packed byte looks up its row of a 256 x 8 table (one gather).
* **where_bits**: the same table as 0 / -1 (int8, sign-extended to the integer type of
  ``values``' width inside the and), and-ed with ``values``' bits: +0 where the bit is clear, ``values`` bit for bit where
  set (also for inf and NaN, as torch's ``threshold_backward`` gives, where a multiply
  by the mask would give NaN).
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

__all__ = ["PACKABLE_BITS", "pack_codes", "unpack_codes", "pack_bits", "unpack_bits", "where_bits",
           "packed_bytes"]

PACKABLE_BITS = (1, 2, 4, 8)
_LITTLE_ENDIAN = sys.byteorder == "little"
_GATHER = sum(1 << 7 * k for k in range(1, 9))  # < 2**57: bit 56 + i of w * _GATHER is byte i of w
_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # signed: the int8 mask stays int8 or widens


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
    if per_byte == 8 and _LITTLE_ENDIAN:
        if flat.numel() % 8 or flat.storage_offset() % 8:
            flat = F.pad(flat, (0, -flat.numel() % 8))  # a copy: whole int64 words from offset 0
        return (flat.view(torch.int64) * _GATHER >> 56).to(torch.uint8)  # the high byte, modulo 256
    flat = F.pad(flat, (0, -flat.numel() % per_byte))
    shifted = flat.view(-1, per_byte) << _shifts(bits, flat.device)  # each code moved to its place
    return shifted.sum(dim=1, dtype=torch.uint8)  # disjoint bits: the sum is a bitwise or


def unpack_codes(packed: torch.Tensor, bits: int, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: a uint8 tensor of ``shape``."""
    shape = torch.Size(shape)
    per_byte = 8 // _check_bits(bits)
    if per_byte == 1:
        return packed[: shape.numel()].view(shape)
    if per_byte == 8:
        return _bit_rows(packed, _bit_table(packed.device), shape)
    mask = (1 << bits) - 1
    codes = packed.unsqueeze(1) >> _shifts(bits, packed.device)  # (bytes, per_byte)
    codes &= mask  # in place: the codes are the only full-size temporary
    return codes.reshape(-1)[: shape.numel()].view(shape)


def _bit_table(device) -> torch.Tensor:
    """``(256, 8)`` uint8: row ``b`` holds the bits of ``b``, lowest first."""
    return (torch.arange(256, dtype=torch.uint8, device=device).unsqueeze(1) >> _shifts(1, device)) & 1


def _bit_rows(packed: torch.Tensor, table: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Each packed byte's row of ``table``, flattened to ``shape`` (int32 indices: half the bytes of int64)."""
    return table.index_select(0, packed.to(torch.int32)).reshape(-1)[: shape.numel()].view(shape)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into ``ceil(numel / 8)`` bytes (flattened order)."""
    return pack_codes(mask, 1)


def unpack_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape`` (the unpacked 0/1 bytes read as bool, no copy)."""
    return unpack_codes(packed, 1, shape).view(torch.bool)


def where_bits(packed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` where the packed bit (flattened order of ``values``' shape) is set, +0 elsewhere."""
    integer = _SAME_WIDTH_INT[values.element_size()]
    # 0 or -1 as int8 (one byte per element, as the unpacked bits): the and sign-extends it to all ones
    keep = _bit_rows(packed, -_bit_table(packed.device).to(torch.int8), values.shape)
    return torch.bitwise_and(values.view(integer), keep).view(values.dtype)
