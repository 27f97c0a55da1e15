"""Lossless savers: torch layers that keep less for backward and give torch's gradients bit for bit.

Each class is a subclass of the torch module it replaces, with the same constructor, so a module
converts in place (``module.__class__ = LosslessMaxPool2d``; :data:`LOSSLESS_FOR` maps each torch
class to its saver, exact classes only). When autograd records and the input requires grad, the
forward runs a custom ``torch.autograd.Function`` that computes the output with torch's own
functional (same values, same random draws) and keeps only what the backward needs; the backward
calls torch's own backward kernel, or repeats torch's backward arithmetic, on rebuilt operands.
Outputs, input gradients (their layout included) and the global random stream are therefore
bit-identical to plain torch's: tested on CPU in fp32, fp64 and bf16. Otherwise (no grad, eval, or
a case listed below as falling back) the parent's forward runs unchanged, so a saver never keeps
more than torch.

Bytes kept for backward per input element, measured with ``xconv.memory.kept_bytes`` on an
8x64x56x56 input (fp32 / bf16; torch's count includes the input it keeps)::

    layer                    torch keeps                       fp32 torch / ours  bf16 torch / ours
    MaxPool2d(2)             x + int64 index per output        6     / 0.0625     4    / 0.0625
    MaxPool2d(3, 2, 1)       x + int64 index per output        6     / 0.125      4    / 0.125
    AvgPool2d, AdaptiveAvgPool2d(7)  x                         4     / 0          2    / 0
    AdaptiveAvgPool2d(1)     nothing (a mean): left to torch   0     / 0          0    / 0
    Dropout, AlphaDropout    float noise, x's dtype            4     / 0.125      2    / 0.125
    Dropout2d                float noise per channel           1/784 / 1/25088    1/1568 / 1/25088
    Hardtanh, ReLU6          x (also when in place)            4     / 0.125      2    / 0.125

Max pooling keeps ``b`` bits per output, ``b`` the fewest of 1, 2, 4, 8 with ``2**b >= K`` (K the
cells of a window): MaxPool2d(2) keeps 2 bits per output, a quarter of a byte per 4 inputs.

How each is exact:

* Max pooling: ``F.max_poolNd(..., return_indices=True)`` gives torch's own winners (ties, NaN
  and -inf resolved as torch resolves them). The flat index of output ``o`` lies in o's window,
  whose cells are ``start + k * dilation`` with ``start = o * stride - padding`` per spatial
  dimension, so ``k = (coord - start) / dilation`` per dimension and the offset
  ``sum_j k_j * prod(K_l, l > j) < K <= 256`` packs into ``b`` bits. In flat terms the index is
  ``first + delta``, ``first`` the window's first cell and ``delta = sum_j k_j d_j P_j`` (``P_j``
  the plane stride): when the K deltas are distinct, a lookup table indexed by
  ``index - first`` gives the offset with no integer division, and the index is accepted only if
  the offset's delta gives it back; otherwise (a window wider than the input along an inner
  dimension) the offset is computed per coordinate, with a division per dimension. Backward rebuilds the same
  int64 indices (in the layout torch made them) and calls ``aten.max_pool{2,3}d_with_indices_backward``,
  the kernel torch's backward runs (1d through the 2d kernel on ``x.unsqueeze(-2)``, as aten's
  max_pool1d does), so overlapping windows accumulate in torch's order. The conversions run a
  slab of dim 0 at a time (``_CHUNK_OUTPUTS``), so their int64 temporaries stay small.
  Falls back to torch for ``return_indices=True``, windows of more than 256 cells, and geometries
  where some window holds no input cell at all (padding with dilation: torch's index there points
  past the input and its own backward writes out of bounds). If an index torch returns lies
  outside its window (its channels-last 3d kernel does that for a window holding only -inf: the
  depth term is missing) the saver keeps torch's int64 indices instead of offsets: 8 bytes per
  output, still less than torch's input plus indices.
* Average pooling is linear: the gradient depends on the input's shape, not its values. Backward
  calls ``aten.avg_pool{2,3}d_backward`` / ``aten._adaptive_avg_pool{2,3}d_backward`` (1d: the 2d
  kernels on ``unsqueeze(-2)``, as aten does) with a stand-in for the input, which those kernels
  read only for its size and suggested memory format: an expanded zero scalar (no memory) when
  that format is contiguous, otherwise an uninitialised tensor with the layout ``empty_like(x)``
  would have (never written, so a large one never becomes resident), so the gradient comes back
  in torch's layout. An adaptive pool with an all-ones output size is a mean in torch and keeps
  nothing: left to torch.
* Dropout draws what aten's composite dropout draws: ``empty_like(x).bernoulli_(1 - p)``, then
  ``noise = bernoulli.div_(1 - p)``, ``y = x * noise`` (``x.mul_(noise)`` in place); ``p == 1``
  is ``x * zeros(())`` without a draw. Backward rebuilds ``noise`` from the bits with the same
  ``div_`` and returns ``grad * noise``, what torch's ``MulBackward0`` computes. On CUDA/XPU
  torch's out-of-place dropout is the fused ``native_dropout`` (output and bool mask; it rounds
  differently, ``x * mask * scale``): there the saver calls it too, keeps the mask as bits and
  calls ``native_dropout_backward`` (checked on CPU against native_dropout; not run on a GPU
  here). Other devices with a fused kernel (lazy, private-use) are left to torch. Channel dropouts
  call torch's own functional on ones shaped ``(N, C, 1, ...)`` (its batching rules, warnings and
  draws; ``1 * noise == noise``), keep one bit per channel and multiply. AlphaDropout repeats
  aten's ``y = x * (a * m) + ((m - 1) * alpha * a + alpha * a * p)`` with the Bernoulli draw ``m``,
  ``a = 1 / sqrt((alpha^2 p + 1)(1 - p))``, and keeps ``m`` as bits. (FeatureAlphaDropout is not
  covered: torch keeps only one value per channel there.)
* Hardtanh/ReLU6: torch's backward is ``0 if v <= min_val or v >= max_val else grad`` (NaN
  passes). ``v`` is the input: torch 2.14 keeps a copy of the input even in place; a torch that
  keeps the in-place output instead is detected once and followed (the two differ in bf16 when a
  bound is not a bf16 number). The bit comes from torch's own ``aten.hardtanh_backward`` on a
  gradient of ones, so the comparison is the kernel's, dtype for dtype; backward is
  ``where(bit, grad, 0)``, exactly what the kernel returns.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake

from .bits import PACKABLE_BITS, pack_bits, pack_codes, unpack_bits, unpack_codes, where_bits

__all__ = [
    "LosslessMaxPool1d", "LosslessMaxPool2d", "LosslessMaxPool3d",
    "LosslessAvgPool1d", "LosslessAvgPool2d", "LosslessAvgPool3d",
    "LosslessAdaptiveAvgPool1d", "LosslessAdaptiveAvgPool2d", "LosslessAdaptiveAvgPool3d",
    "LosslessDropout", "LosslessDropout1d", "LosslessDropout2d", "LosslessDropout3d",
    "LosslessAlphaDropout", "LosslessHardtanh", "LosslessReLU6", "LOSSLESS_FOR", "MAX_WINDOW_CELLS",
]

#: The largest max-pooling window (in cells) whose winning offset fits a byte; larger ones fall back.
MAX_WINDOW_CELLS = 256


def _needs_graph(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _ntuple(value, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return (int(value[0]),) * n
        return tuple(int(v) for v in value)
    return (int(value),) * n


class _Placeholder:
    """What a backward kernel needs of an input it never reads: its size, dtype, device and
    suggested memory format (which picks the kernel and the gradient's layout). ``make()``
    returns a zero-byte expanded scalar when that format is contiguous, else an uninitialised
    tensor laid out as ``empty_like(x)`` would be."""

    __slots__ = ("size", "stride", "dtype", "device")

    def __init__(self, x: torch.Tensor) -> None:
        self.size, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        stride = torch.empty_like(x, device="meta").stride()  # the layout torch's kernels would pick
        contiguous = torch.empty(self.size, device="meta").stride()
        self.stride = None if stride == contiguous else stride

    def make(self) -> torch.Tensor:
        if self.stride is None:
            return torch.zeros((), dtype=self.dtype, device=self.device).expand(self.size)
        return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)


# Max pooling ----------------------------------------------------------------------------------

def _code_bits(cells: int) -> int:
    """The fewest packable bits that hold an offset in ``[0, cells)``."""
    return next(bits for bits in PACKABLE_BITS if cells <= 1 << bits)


@functools.lru_cache(maxsize=1024)
def _every_window_holds_a_cell(size: int, out: int, kernel: int, stride: int, padding: int,
                               dilation: int) -> bool:
    """Whether each of the ``out`` windows along one dimension covers at least one input cell."""
    for o in range(out):
        start = o * stride - padding
        first = max(0, -(start // dilation)) if start < 0 else 0  # first k with start + k*dilation >= 0
        if first >= kernel or start + first * dilation >= size:
            return False
    return True


def _spatial_index(dims: int, at: int, length: int, ndim: int, device) -> torch.Tensor:
    """``arange(length)`` shaped to broadcast along spatial dimension ``at`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[ndim - dims + at] = length
    return torch.arange(length, device=device).view(shape)


#: Largest flat-index distance inside a window that the lookup tables cover (entries of a uint8 table).
_MAX_TABLE = 1 << 22


@functools.lru_cache(maxsize=1024)
def _cell_deltas(in_size: tuple[int, ...], kernel: tuple[int, ...], dilation: tuple[int, ...]):
    """Each window cell's flat-index distance from its window's first cell, ``sum_j k_j d_j P_j``
    (``P_j`` the plane stride of dimension j; cells in row-major order, so cell number = offset), or
    None when two cells share a distance (a window wider than the input along an inner dimension)."""
    planes = [math.prod(in_size[j + 1:]) for j in range(len(in_size))]
    deltas = tuple(sum(k * d * p for k, d, p in zip(cell, dilation, planes))
                   for cell in itertools.product(*(range(n) for n in kernel)))
    return deltas if len(set(deltas)) == len(deltas) else None


class _Lookup(NamedTuple):
    """What the table path needs, made once per call: each output's first window cell (broadcast over
    outputs), each cell's distance from it, and the table from distance to cell number."""

    firsts: torch.Tensor
    cells: torch.Tensor
    table: torch.Tensor


def _lookup(geometry, codes: torch.Tensor) -> _Lookup | None:
    """The lookup for outputs shaped like ``codes`` when the tables apply, else None: the offsets are
    then computed per coordinate (:func:`_offsets_from_indices`), with an integer division per dimension."""
    in_size, kernel, stride, padding, dilation = geometry
    deltas = _cell_deltas(in_size, kernel, dilation)
    if deltas is None or deltas[-1] >= _MAX_TABLE:  # the last cell is the farthest
        return None
    device = codes.device
    firsts = _window_firsts(codes.shape[-len(kernel):], in_size, stride, padding, codes.dim(), device)
    cells = torch.tensor(deltas, dtype=torch.int64, device=device)
    table = torch.zeros(deltas[-1] + 1, dtype=torch.uint8, device=device)
    table[cells] = torch.arange(len(deltas), device=device).to(torch.uint8)
    return _Lookup(firsts, cells, table)


def _window_firsts(out_size, in_size, stride, padding, ndim: int, device) -> torch.Tensor:
    """The flat index of each output's first window cell, ``sum_j (o_j s_j - p_j) P_j`` (it may lie
    outside the input when the window starts in the padding), shaped to broadcast over outputs."""
    dims, first, plane = len(out_size), None, 1
    for j in reversed(range(dims)):
        start = _spatial_index(dims, j, out_size[j], ndim, device).mul(stride[j]).sub_(padding[j]).mul_(plane)
        first = start if first is None else first + start
        plane *= in_size[j]
    return first


def _offsets_by_table(indices, lookup: _Lookup):
    """Offsets from ``delta = index - first cell`` by a lookup table (no integer division), and
    whether any index lies outside its window: its table offset does not give back its index."""
    delta = indices - lookup.firsts
    offsets = lookup.table[delta.clamp(0, lookup.table.numel() - 1)]
    return offsets, (lookup.cells[offsets.long()] != delta).any()


def _indices_by_table(offsets, lookup: _Lookup) -> torch.Tensor:
    """Inverse of :func:`_offsets_by_table`: ``first cell + delta[offset]``, torch's flat indices."""
    return lookup.cells[offsets.long()].add_(lookup.firsts)


def _offsets_from_indices(indices, in_size, kernel, stride, padding, dilation):
    """torch's flat input indices (per plane) -> (offset of each inside its window, int64; whether
    any index lies outside its window, a bool scalar tensor)."""
    dims, out_size = len(kernel), indices.shape[-len(kernel):]
    rest, offsets, cells = indices.clone(), None, 1  # at most three int64 tensors of this size live
    outside = torch.zeros((), dtype=torch.bool, device=indices.device)
    for j in reversed(range(dims)):
        coord = rest if j == 0 else rest % in_size[j]  # the outermost coordinate needs no modulo
        if j:
            rest.div_(in_size[j], rounding_mode="floor")
        start = _spatial_index(dims, j, out_size[j], rest.dim(), rest.device) * stride[j] - padding[j]
        coord.sub_(start)  # = k_j * dilation_j inside the window
        if dilation[j] > 1:
            outside |= (coord % dilation[j] != 0).any()
            coord.div_(dilation[j], rounding_mode="floor")
        outside |= ((coord < 0) | (coord >= kernel[j])).any()
        coord.mul_(cells)  # k_j * prod(K_l, l > j)
        offsets = coord if offsets is None else offsets.add_(coord)
        cells *= kernel[j]
    return offsets, outside


def _indices_from_offsets(offsets, in_size, kernel, stride, padding, dilation) -> torch.Tensor:
    """Inverse of :func:`_offsets_from_indices`: torch's flat input indices, int64."""
    dims, out_size = len(kernel), offsets.shape[-len(kernel):]
    rest, indices, plane = offsets.long(), None, 1  # at most three int64 tensors of this size live
    for j in reversed(range(dims)):
        coord = rest % kernel[j]
        rest.div_(kernel[j], rounding_mode="floor")
        start = _spatial_index(dims, j, out_size[j], rest.dim(), rest.device) * stride[j] - padding[j]
        coord.mul_(dilation[j]).add_(start).mul_(plane)  # c_j * prod(in_size_l, l > j)
        indices = coord if indices is None else indices.add_(coord)
        plane *= in_size[j]
    return indices


#: Outputs converted per step between indices and offsets: bounds the int64 temporaries.
_CHUNK_OUTPUTS = 1 << 18


def _slabs(tensor: torch.Tensor):
    """Slices of dim 0 holding about ``_CHUNK_OUTPUTS`` elements each."""
    rows = max(1, _CHUNK_OUTPUTS * tensor.shape[0] // max(1, tensor.numel()))
    return [slice(begin, begin + rows) for begin in range(0, tensor.shape[0], rows)]


def _window_offsets(indices: torch.Tensor, geometry):
    """``(offsets as uint8, True)``, or ``(None, False)`` if some index lies outside its window."""
    offsets = torch.empty(indices.shape, dtype=torch.uint8, device=indices.device)
    outside = torch.zeros((), dtype=torch.bool, device=indices.device)
    lookup = _lookup(geometry, indices)
    for rows in _slabs(indices):
        chunk, chunk_outside = (_offsets_from_indices(indices[rows], *geometry) if lookup is None
                                else _offsets_by_table(indices[rows], lookup))
        offsets[rows] = chunk  # < 256 where inside; garbage elsewhere, then discarded
        outside |= chunk_outside
    if is_fake(indices):  # under fake tensors (xconv.fake_peak) there is no data to check: a window always holds its max
        return offsets, True
    return (None, False) if bool(outside) else (offsets, True)


def _input_indices(offsets: torch.Tensor, stride, geometry) -> torch.Tensor:
    """torch's int64 indices rebuilt from ``offsets``, laid out with strides ``stride``."""
    indices = torch.empty_strided(offsets.shape, stride, dtype=torch.int64, device=offsets.device)
    lookup = _lookup(geometry, offsets)
    for rows in _slabs(offsets):
        indices[rows] = (_indices_from_offsets(offsets[rows], *geometry) if lookup is None
                         else _indices_by_table(offsets[rows], lookup))
    return indices


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class _MaxPoolOffsets(torch.autograd.Function):
    """Max pooling keeping each output's winning offset inside its window, in ``bits`` bits."""

    @staticmethod
    def forward(ctx, x, dims, kernel, stride, padding, dilation, ceil_mode):
        out, indices = _MAX_POOL[dims](x, kernel, stride, padding, dilation, ceil_mode=ceil_mode,
                                       return_indices=True)
        in_size = tuple(x.shape[-dims:])
        geometry = (in_size, kernel, stride, padding, dilation)
        offsets, inside = _window_offsets(indices, geometry)
        ctx.bits = _code_bits(math.prod(kernel)) if inside else None
        # torch's backward kernels read the indices in the layout torch made them (channels-last
        # 3d ones are not re-laid out): rebuild them in that layout
        ctx.indices_stride = indices.stride()  # dense: the forward kernel just made it
        # An index outside its window (torch's channels-last 3d kernel gives one for a window of
        # -inf only, missing the depth term): keep torch's indices, still less than torch keeps
        ctx.save_for_backward(pack_codes(offsets, ctx.bits) if inside else indices)
        del indices, offsets
        ctx.geometry, ctx.ceil_mode, ctx.out_shape = geometry, ceil_mode, out.shape
        # the kernels see 1d pooling as 2d pooling of x.unsqueeze(-2), as torch's max_pool1d does
        ctx.placeholder = _Placeholder(x.unsqueeze(-2) if dims == 1 else x)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (kept,) = ctx.saved_tensors
        if ctx.bits is None:
            indices = kept
        else:
            indices = _input_indices(unpack_codes(kept, ctx.bits, ctx.out_shape), ctx.indices_stride, ctx.geometry)
        _, kernel, stride, padding, dilation = ctx.geometry
        if len(kernel) == 1:
            grad = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_out.unsqueeze(-2), ctx.placeholder.make(), (1, kernel[0]), (1, stride[0]),
                (0, padding[0]), (1, dilation[0]), ctx.ceil_mode, indices.unsqueeze(-2)).squeeze(-2)
        else:
            backward = (torch.ops.aten.max_pool2d_with_indices_backward if len(kernel) == 2
                        else torch.ops.aten.max_pool3d_with_indices_backward)
            grad = backward(grad_out, ctx.placeholder.make(), kernel, stride, padding, dilation,
                            ctx.ceil_mode, indices)
        return grad, None, None, None, None, None, None


class _LosslessMaxPoolMixin:
    _dims = 2

    def forward(self, input: torch.Tensor):
        geometry = self._lossless_geometry(input)
        if geometry is None:
            return super().forward(input)
        return _MaxPoolOffsets.apply(input, self._dims, *geometry)

    def _lossless_geometry(self, x: torch.Tensor):
        """``(kernel, stride, padding, dilation, ceil_mode)`` as tuples, or None to fall back to torch."""
        d = self._dims
        if self.return_indices or not _needs_graph(x) or x.numel() == 0 or x.dim() not in (d + 1, d + 2):
            return None
        kernel, padding, dilation = (_ntuple(v, d) for v in (self.kernel_size, self.padding, self.dilation))
        stride = _ntuple(self.stride if self.stride not in (None, (), []) else self.kernel_size, d)
        if math.prod(kernel) > MAX_WINDOW_CELLS or min(stride) < 1 or min(kernel) < 1 or min(dilation) < 1:
            return None  # too large to fit a byte; invalid arguments get torch's own error
        for j in range(d):
            size = x.shape[x.dim() - d + j]
            out = _pooled_size(size, kernel[j], stride[j], padding[j], dilation[j], bool(self.ceil_mode))
            if out < 1 or not _every_window_holds_a_cell(size, out, kernel[j], stride[j], padding[j], dilation[j]):
                return None
        return kernel, stride, padding, dilation, bool(self.ceil_mode)


def _pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling output size along one dimension (``pooling_output_shape``)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or its left padding
    return out


class LosslessMaxPool1d(_LosslessMaxPoolMixin, nn.MaxPool1d):
    """Drop-in ``nn.MaxPool1d`` keeping each output's winning offset in its window (<= 8 bits)."""

    _dims = 1


class LosslessMaxPool2d(_LosslessMaxPoolMixin, nn.MaxPool2d):
    """Drop-in ``nn.MaxPool2d`` keeping each output's winning offset in its window (<= 8 bits)."""

    _dims = 2


class LosslessMaxPool3d(_LosslessMaxPoolMixin, nn.MaxPool3d):
    """Drop-in ``nn.MaxPool3d`` keeping each output's winning offset in its window (<= 8 bits)."""

    _dims = 3


# Average pooling --------------------------------------------------------------------------------

class _ShapeOnlyPool(torch.autograd.Function):
    """A linear pooling ``out = pool(x)`` whose backward needs only x's shape (and layout)."""

    @staticmethod
    def forward(ctx, x, pool, backward, dims):
        # the kernels see 1d pooling as 2d pooling of x.unsqueeze(-2), as aten's 1d pools do
        ctx.backward_fn, ctx.placeholder = backward, _Placeholder(x.unsqueeze(-2) if dims == 1 else x)
        return pool(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        return ctx.backward_fn(grad_out, ctx.placeholder.make()), None, None, None


def _avg_pool_backward(dims, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    def backward(grad_out, x):
        if dims == 1:  # aten's avg_pool1d is avg_pool2d of x.unsqueeze(-2) (x is that already)
            return torch.ops.aten.avg_pool2d_backward(
                grad_out.unsqueeze(-2), x, (1, kernel[0]), (1, stride[0]), (0, padding[0]),
                ceil_mode, count_include_pad, None).squeeze(-2)
        op = torch.ops.aten.avg_pool2d_backward if dims == 2 else torch.ops.aten.avg_pool3d_backward
        return op(grad_out, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return backward


class _LosslessAvgPoolMixin:
    _dims = 2

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input) or input.numel() == 0:
            return super().forward(input)
        d = self._dims
        kernel, padding = _ntuple(self.kernel_size, d), _ntuple(self.padding, d)
        stride = _ntuple(self.stride if self.stride not in (None, (), []) else self.kernel_size, d)
        backward = _avg_pool_backward(d, kernel, stride, padding, bool(self.ceil_mode),
                                      bool(self.count_include_pad), getattr(self, "divisor_override", None))
        return _ShapeOnlyPool.apply(input, super().forward, backward, d)


class LosslessAvgPool1d(_LosslessAvgPoolMixin, nn.AvgPool1d):
    """Drop-in ``nn.AvgPool1d`` keeping only the input's shape for backward."""

    _dims = 1


class LosslessAvgPool2d(_LosslessAvgPoolMixin, nn.AvgPool2d):
    """Drop-in ``nn.AvgPool2d`` keeping only the input's shape for backward."""

    _dims = 2


class LosslessAvgPool3d(_LosslessAvgPoolMixin, nn.AvgPool3d):
    """Drop-in ``nn.AvgPool3d`` keeping only the input's shape for backward."""

    _dims = 3


def _adaptive_backward(dims):
    def backward(grad_out, x):
        if dims == 1:  # aten's adaptive_avg_pool1d is adaptive_avg_pool2d of x.unsqueeze(-2) (x is that already)
            return torch.ops.aten._adaptive_avg_pool2d_backward(grad_out.unsqueeze(-2), x).squeeze(-2)
        op = (torch.ops.aten._adaptive_avg_pool2d_backward if dims == 2
              else torch.ops.aten._adaptive_avg_pool3d_backward)
        return op(grad_out, x)
    return backward


class _LosslessAdaptiveAvgPoolMixin:
    _dims = 2

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input) or input.numel() == 0 or input.dim() <= self._dims or self._is_a_mean(input):
            return super().forward(input)
        return _ShapeOnlyPool.apply(input, super().forward, _adaptive_backward(self._dims), self._dims)

    def _is_a_mean(self, x: torch.Tensor) -> bool:
        """torch computes an all-ones output size as a mean, which keeps nothing: leave it to torch."""
        d, size = self._dims, self.output_size
        sizes = (size,) * d if not isinstance(size, (tuple, list)) else tuple(size) * (d if len(size) == 1 else 1)
        resolved = [x.shape[x.dim() - d + j] if v is None else v for j, v in enumerate(sizes)]
        return all(v == 1 for v in resolved)


class LosslessAdaptiveAvgPool1d(_LosslessAdaptiveAvgPoolMixin, nn.AdaptiveAvgPool1d):
    """Drop-in ``nn.AdaptiveAvgPool1d`` keeping only the input's shape for backward."""

    _dims = 1


class LosslessAdaptiveAvgPool2d(_LosslessAdaptiveAvgPoolMixin, nn.AdaptiveAvgPool2d):
    """Drop-in ``nn.AdaptiveAvgPool2d`` keeping only the input's shape for backward."""

    _dims = 2


class LosslessAdaptiveAvgPool3d(_LosslessAdaptiveAvgPoolMixin, nn.AdaptiveAvgPool3d):
    """Drop-in ``nn.AdaptiveAvgPool3d`` keeping only the input's shape for backward."""

    _dims = 3


# Dropout ----------------------------------------------------------------------------------------

class _BitMaskScale(torch.autograd.Function):
    """``y = x * noise (+ shift)`` where ``noise = rebuild(keep)``; keeps ``keep`` as bits.

    ``keep`` (bool) and ``noise`` have x's shape or broadcast to it; ``rebuild(keep)`` must give
    ``noise`` bit for bit (None: ``noise`` is zero everywhere, p = 1)."""

    @staticmethod
    def forward(ctx, x, keep, noise, shift, rebuild, inplace):
        out = x.mul_(noise) if inplace else x * noise
        if shift is not None:
            out = out.add_(shift)
        if inplace:
            ctx.mark_dirty(x)
        ctx.rebuild, ctx.mask_shape, ctx.dtype = rebuild, keep.shape, x.dtype
        ctx.save_for_backward(pack_bits(keep) if rebuild is not None else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        if ctx.rebuild is None:  # p == 1: torch multiplies by a zero scalar
            noise = torch.zeros((), dtype=ctx.dtype, device=grad_out.device)
        else:
            noise = ctx.rebuild(unpack_bits(packed, ctx.mask_shape).to(ctx.dtype))
        return grad_out * noise, None, None, None, None, None


def _dropout_scale(p: float):
    def rebuild(bernoulli: torch.Tensor) -> torch.Tensor:
        return bernoulli.div_(1 - p)  # aten: noise.div_(1 - p)
    return rebuild


#: Devices where aten's out-of-place dropout runs the fused ``native_dropout`` kernel
#: (``is_fused_kernel_acceptable``; also "lazy" and private-use backends, which these savers leave
#: to torch). In-place dropout is the composite one on every device.
_FUSED_DROPOUT_DEVICES = ("cuda", "xpu")
#: Devices where aten's dropout is ``input * bernoulli(1 - p) / (1 - p)``, repeated here draw for draw.
_COMPOSITE_DROPOUT_DEVICES = ("cpu", "mps")


class _NativeDropout(torch.autograd.Function):
    """aten's fused dropout (``native_dropout``: output and bool mask), keeping the mask as bits."""

    @staticmethod
    def forward(ctx, x, p):
        out, keep = torch.ops.aten.native_dropout(x, p, True)
        ctx.save_for_backward(pack_bits(keep))
        ctx.shape, ctx.scale = keep.shape, 1.0 / (1.0 - p)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        keep = unpack_bits(packed, ctx.shape)
        return torch.ops.aten.native_dropout_backward(grad_out, keep, ctx.scale), None


class LosslessDropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` keeping a 1-bit mask; draws the same random numbers as torch."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p, device = float(self.p), input.device.type
        if (not (self.training and _needs_graph(input)) or p == 0.0 or input.numel() == 0 or not 0.0 < p <= 1.0
                or device not in _FUSED_DROPOUT_DEVICES + _COMPOSITE_DROPOUT_DEVICES):
            return super().forward(input)
        if p == 1.0:  # aten, every device: input * zeros({}), no random draw
            zero = torch.zeros((), dtype=input.dtype, device=input.device)
            return _BitMaskScale.apply(input, zero.bool(), zero, None, None, self.inplace)
        if device in _FUSED_DROPOUT_DEVICES and not self.inplace:  # aten's dropout_ is never fused
            return _NativeDropout.apply(input, p)
        bernoulli = torch.empty_like(input).bernoulli_(1 - p)  # aten's composite dropout, draw for draw
        keep = bernoulli.bool()
        rebuild = _dropout_scale(p)
        return _BitMaskScale.apply(input, keep, rebuild(bernoulli), None, rebuild, self.inplace)


class _LosslessFeatureDropoutMixin:
    _functional = staticmethod(F.dropout2d)

    def _leading_dims(self, x: torch.Tensor) -> int:
        """How many leading dimensions of x the channel noise spans (the rest broadcast)."""
        return 2

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not (self.training and _needs_graph(input)) or p == 0.0 or input.numel() == 0 or not 0.0 < p <= 1.0:
            return super().forward(input)
        lead = min(self._leading_dims(input), input.dim())
        ones = torch.ones(input.shape[:lead] + (1,) * (input.dim() - lead), dtype=input.dtype, device=input.device)
        noise = self._functional(ones, p, True, False)  # torch's own draw and batching rules; 1 * noise == noise
        keep = noise != 0
        rebuild = None if p == 1.0 else _dropout_scale(p)
        return _BitMaskScale.apply(input, keep, noise, None, rebuild, self.inplace)


class LosslessDropout1d(_LosslessFeatureDropoutMixin, nn.Dropout1d):
    """Drop-in ``nn.Dropout1d`` keeping one bit per channel; draws the same random numbers as torch."""

    _functional = staticmethod(F.dropout1d)

    def _leading_dims(self, x):
        return 2 if x.dim() == 3 else 1  # unbatched (C, L): torch unsqueezes a batch of 1


class LosslessDropout2d(_LosslessFeatureDropoutMixin, nn.Dropout2d):
    """Drop-in ``nn.Dropout2d`` keeping one bit per channel; draws the same random numbers as torch."""

    _functional = staticmethod(F.dropout2d)

    def _leading_dims(self, x):
        return 2  # torch never unsqueezes here (a 3-D input is read as (N, C, L))


class LosslessDropout3d(_LosslessFeatureDropoutMixin, nn.Dropout3d):
    """Drop-in ``nn.Dropout3d`` keeping one bit per channel; draws the same random numbers as torch."""

    _functional = staticmethod(F.dropout3d)

    def _leading_dims(self, x):
        return 2 if x.dim() == 5 else 1  # otherwise torch unsqueezes a batch of 1


#: SELU's negative saturation constant, as aten's alpha_dropout spells it.
_SELU_ALPHA = 1.7580993408473766


class LosslessAlphaDropout(nn.AlphaDropout):
    """Drop-in ``nn.AlphaDropout`` keeping a 1-bit mask; draws the same random numbers as torch."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not (self.training and _needs_graph(input)) or p == 0.0 or input.numel() == 0 or not 0.0 < p <= 1.0:
            return super().forward(input)
        if p == 1.0:  # aten: input * zeros({}), no random draw, no shift
            zero = torch.zeros((), dtype=input.dtype, device=input.device)
            return _BitMaskScale.apply(input, zero.bool(), zero, None, None, False)
        a = 1.0 / math.sqrt((_SELU_ALPHA * _SELU_ALPHA * p + 1) * (1 - p))
        bernoulli = torch.empty_like(input).bernoulli_(1 - p)
        keep = bernoulli.bool()
        shift = bernoulli.add(-1).mul_(_SELU_ALPHA * a).add_(_SELU_ALPHA * a * p)  # aten's b
        return _BitMaskScale.apply(input, keep, bernoulli.mul_(a), shift, _alpha_scale(a), False)


def _alpha_scale(a: float):
    def rebuild(bernoulli: torch.Tensor) -> torch.Tensor:
        return bernoulli.mul_(a)  # aten: noise.mul_(a)
    return rebuild


# Hardtanh / ReLU6 -------------------------------------------------------------------------------

def _passes_gradient(v: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    """Where torch's ``hardtanh_backward(grad, v, min_val, max_val)`` passes the gradient (bool),
    asked of the kernel itself with a grad of ones (an expanded scalar: no memory)."""
    ones = torch.ones((), dtype=v.dtype, device=v.device).expand_as(v)
    return torch.ops.aten.hardtanh_backward(ones, v, min_val, max_val) != 0


@functools.lru_cache(maxsize=None)
def _inplace_hardtanh_tests_its_output() -> bool:
    """Whether torch's in-place hardtanh saves its output (``_saved_result``) for backward rather
    than its input (``_saved_self``, torch 2.14). The two differ in bf16 when a bound is not a
    bf16 number (the clamped output is the rounded bound), so ask torch once."""
    with torch.enable_grad():
        leaf = torch.zeros(1, requires_grad=True)
        node = F.hardtanh(leaf * 1, inplace=True).grad_fn
    return hasattr(node, "_saved_result") and not hasattr(node, "_saved_self")


class _ClampBit(torch.autograd.Function):
    """``y = hardtanh(x, min_val, max_val)`` keeping one bit per element: does the gradient pass."""

    @staticmethod
    def forward(ctx, x, min_val, max_val, inplace):
        tests_output = inplace and _inplace_hardtanh_tests_its_output()
        passes = None if tests_output else _passes_gradient(x, min_val, max_val)  # before x changes
        out = F.hardtanh(x, min_val, max_val, inplace=inplace)
        if inplace:
            ctx.mark_dirty(x)
        if tests_output:
            passes = _passes_gradient(out, min_val, max_val)
        ctx.save_for_backward(pack_bits(passes))
        ctx.shape = x.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        return where_bits(packed, grad_out), None, None, None


class LosslessHardtanh(nn.Hardtanh):
    """Drop-in ``nn.Hardtanh`` keeping one bit per element instead of its input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input) or input.numel() == 0:
            return super().forward(input)
        return _ClampBit.apply(input, self.min_val, self.max_val, self.inplace)


class LosslessReLU6(nn.ReLU6):
    """Drop-in ``nn.ReLU6`` keeping one bit per element instead of its input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input) or input.numel() == 0:
            return super().forward(input)
        return _ClampBit.apply(input, self.min_val, self.max_val, self.inplace)


#: The plain torch layer each lossless saver replaces (exact classes only, not their subclasses).
LOSSLESS_FOR = {
    nn.MaxPool1d: LosslessMaxPool1d, nn.MaxPool2d: LosslessMaxPool2d, nn.MaxPool3d: LosslessMaxPool3d,
    nn.AvgPool1d: LosslessAvgPool1d, nn.AvgPool2d: LosslessAvgPool2d, nn.AvgPool3d: LosslessAvgPool3d,
    nn.AdaptiveAvgPool1d: LosslessAdaptiveAvgPool1d, nn.AdaptiveAvgPool2d: LosslessAdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d: LosslessAdaptiveAvgPool3d,
    nn.Dropout: LosslessDropout, nn.Dropout1d: LosslessDropout1d, nn.Dropout2d: LosslessDropout2d,
    nn.Dropout3d: LosslessDropout3d, nn.AlphaDropout: LosslessAlphaDropout,
    nn.Hardtanh: LosslessHardtanh, nn.ReLU6: LosslessReLU6,
}
