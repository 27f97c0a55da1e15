"""Compact savers: norms and smooth activations that keep an approximation for backward.

The lossless savers (:mod:`xconv.activations`) give torch's gradients bit for
bit; these keep less than that and say how far the backward may drift. Each
class is a subclass of its torch module with the same constructor (plus an
optional keyword-only ``bits``), so ``module.__class__ = CompactBatchNorm2d``
converts in place, and :data:`COMPACT_FOR` maps each torch class to its
replacement. The forward output and the running statistics come from the
parent's own forward (``F.batch_norm``, ``F.group_norm``, ``F.instance_norm``,
``F.layer_norm``, ``F.silu`` ...), so they are bit-identical to torch's; only
the backward uses the approximation. The custom autograd Function is used only
when autograd records and something needs a gradient; otherwise (inference,
frozen layers, empty or unsupported inputs) the module is its parent.

Norms
-----
``CompactBatchNorm1d/2d/3d``, ``CompactGroupNorm``, ``CompactInstanceNorm1d/2d/3d``,
``CompactLayerNorm``.
Every norm computes ``y = x_hat * w + b`` with ``x_hat = (x - mean) * rstd``,
``rstd = (var + eps) ** -0.5``, mean and (biased) variance taken over the
reduction set of each normalization group: a channel over batch and space
(batch norm), a sample's channel group over channels and space (group norm),
a sample's channel over space (instance norm), a row over the normalized
shape (layer norm). With ``gw = grad_out * w`` and means over the group's M
elements, the exact backward is (eps included)::

    dx      = rstd * (gw - mean(gw) - x_hat * mean(gw * x_hat))    batch statistics
    dx      = rstd_running * gw                                    running statistics (eval BN, IN)
    dweight = sum(grad_out * x_hat)          dbias = sum(grad_out)

We keep ``x_hat`` quantized to ``bits`` = 8 (default) or 16 bits with one
offset and step per normalization group, plus the group's ``rstd``; the
weight is a Parameter and is not copied. Per group, ``lo = min x_hat``,
``D = (max x_hat - lo) / (2**bits - 1)``, ``t = (x_hat - lo) / D`` and the code
is ``floor(t + u)`` = ``floor(t) + [u > 1 - frac(t)]`` with ``u`` uniform noise on (0, 1): **unbiased
stochastic rounding** (as ActNN does at 2 bits). ``u = (k + 1/2) / 2**16`` with ``k`` uniform on
``0 .. 2**16 - 1`` (16 random bits per element, four elements per 64-bit draw of the generator). The dequantized
``q = lo + D * code`` satisfies ``E[q] = x_hat``, ``|q - x_hat| < D`` and
``Var q = D**2 f (1 - f) <= D**2 / 4`` (``f`` the fractional part of ``t``),
each element rounded independently. ``u`` comes from XConv's generator
(:func:`xconv.rng.next_call_seed`, :func:`xconv.rng.probe_generator`): torch's
global stream is never read or advanced, ``torch.manual_seed`` makes the
rounding reproducible, and ctx keeps only the integer seed beside the codes.

What that gives, for ``g = grad_out`` and a group of M elements:

* ``dbias`` is exact (no ``x_hat`` in it), and ``dx`` with running statistics
  is exact up to float rounding (no ``x_hat`` in it either);
* ``dweight = sum(g * q)`` is linear in ``q``: **unbiased**, with
  ``|error| <= D * sum|g|`` and standard deviation ``<= (D / 2) * ||g||``;
* ``dx`` with batch statistics: the terms ``gw - mean(gw)`` are exact and
  ``q * mean(gw * q)`` is a product of two rounded quantities. Since
  ``E[q_i q_j] = x_hat_i x_hat_j + [i = j] Var q_i``, its expectation is
  ``E[dx_i] = dx_i - rstd * gw_i * Var(q_i) / M``: a bias of at most
  ``rstd * |gw_i| * D**2 / (4 M)``, i.e. ``D**2 / (4 M)`` relative to the
  ``rstd * gw_i`` term (about 1e-8 for a BN channel of 8x56x56 elements with
  x_hat spanning 8 at 8 bits; ``tests/xconv/test_compact.py`` measures it where
  it is deterministic, M = 4, as ``D**2 / 16``). Everything else in ``dx`` is
  unbiased, and ``|dx_i - exact_i| <= rstd * D * (|mean(gw * q)| + |x_hat_i| * mean|gw|)``.

Typical size, float32 8x64x56x56 input, x_hat spanning about 8.2 per channel,
``grad_out`` standard normal and independent of x (relative Frobenius error
against torch's gradient): 8 bits: ``dx`` 1.2e-4 (BN) to 2.9e-4 (LN over 56x56),
``dweight`` 0.9-1.3% (about ``D / sqrt(12)`` against an exact ``dweight`` that
is itself a random sum); 16 bits: ``dx`` 5e-7 to 1.1e-6, ``dweight`` 4-5e-5.
Eval-mode BN: ``dx`` equal to torch's in that run.

Unbiasedness holds in exact arithmetic. In floating point ``t`` carries a
relative rounding error of one ulp of the compute dtype (float32 for
float32/bfloat16/float16 inputs, float64 for float64), which moves the rounding
probability by at most ``2**bits * 2**-24`` steps in float32 (1.5e-5 steps at 8
bits, 4e-3 at 16), ``u``'s 16-bit resolution moves it by less than ``2**-16``
(1.5e-5) steps, and ``x_hat`` and ``rstd`` are recomputed here (same
formula, a few ulps from torch's internal values). Inputs of bfloat16/float16
are handled as torch does on CPU: statistics and backward in float32, the
input gradient rounded to the input dtype, the weight and bias gradients to
the parameters' dtype (mixed bfloat16 input / float32 parameters included).
Non-finite inputs give non-finite gradients, as in torch. The backward is
once-differentiable (no double backward).

Bytes kept per element (the parent keeps its input; plus small per-group
statistics on both sides)::

    input dtype      torch   bits=8   bits=16
    float64          8       1        2
    float32          4       1        2
    bfloat16/fp16    2       1        torch's own saver (2 would not be less)

plus, per normalization group, ``lo``, ``D`` and ``rstd`` in the compute dtype
(torch: mean and rstd). A layer never keeps more than plain PyTorch: where the
codes and per-group numbers would not be fewer bytes than the input (16 bits
on a half-precision input, groups of one or two elements) the module runs as
its parent. Less is kept when less is needed: only ``rstd`` (no codes) when
the input needs a gradient but the weight does not and running statistics
are used (frozen eval-mode BN: an exact input gradient for C numbers), and
nothing but the shapes when only the bias needs a gradient. Measured with
:func:`xconv.memory.kept_bytes` on a float32 8x64x56x56 input, bytes per
element (``tests/xconv/test_compact.py`` asserts the exact byte counts)::

                         torch    bits=8   bits=16
    BatchNorm2d(64)      4.001    1.000    2.000
    GroupNorm(32, 64)    4.001    1.002    2.002
    InstanceNorm2d(64)   4.004    1.004    2.004
    LayerNorm([56, 56])  4.003    1.004    2.004

Smooth activations
------------------
``CompactSiLU``, ``CompactGELU``, ``CompactHardswish``, ``CompactMish``,
``CompactSigmoid``, ``CompactTanh``.
The backward of ``y = f(x)`` is ``grad_out * f'(x)``. We keep, per element, a
``bits``-bit code (2 or 4, default 4; packed with
:func:`xconv.bits.pack_codes`) saying which of ``2**bits`` intervals of the
input axis ``x`` lies in, and multiply by a constant per interval. Interval
``k`` is ``[b_k, b_{k+1})`` (``code = #{breakpoints <= x}``), breakpoints
compared in the input's own dtype after rounding them up to it, which gives
exactly the codes the real breakpoints would. The breakpoints and constants
minimise the **largest absolute error** over the whole real line (minimax, not
least squares): for a target error e, greedily extend each interval until the
derivative's range on it exceeds 2e, put the constant at the range's middle,
and bisect e down to the smallest value that needs ``2**bits`` intervals. The
constants are those of that construction (float64 grid of spacing 2e-5,
breakpoints then rounded to 5 decimals, constants to 7 digits; recomputed beside
these by ``scripts/compact_steps.py`` in the repository); hardswish,
whose derivative is ``x/3 + 1/2`` on ``(-3, 3)``, 0 below and 1 above, gets
the exact optimum: 2 bits split at -1.5, 0, 1.5 (error 1/4, jumps included),
4 bits keep 0 for ``x <= -3`` and 1 for ``x >= 3`` (torch's one-sided
values there) and cut ``(-3, 3)`` into 14 equal pieces (error 1/14).

Largest ``|constant - f'(x)|`` over all real x, with f' torch's own backward
in float64 (each bound is a ceiling of the error measured on a 1e-5 grid plus
the derivative's Lipschitz constant times half the grid step; the tests check
it on another dense grid and that it is attained within 1%)::

    activation            2 bits   4 bits   f' range
    SiLU                  0.1500   0.04286  [-0.100, 1.100]
    GELU (erf)            0.1573   0.04494  [-0.129, 1.129]
    GELU (tanh)           0.1573   0.04495  [-0.129, 1.129]
    Hardswish             0.25     0.07143  [-0.5, 1.5]
    Mish                  0.1502   0.04291  [-0.113, 1.089]
    Sigmoid               0.06251  0.01563  (0, 0.25]
    Tanh                  0.2501   0.06252  (0, 1]

so ``|dx - exact dx| <= bound * |grad_out|`` elementwise (plus one rounding of
the result to the input dtype), a deterministic error, not an unbiased one.
On x ~ N(0.5, 2**2) (float32 8x64x56x56, standard normal ``grad_out``) the
relative error of ``dx`` is, 4 bits / 2 bits: SiLU 3.6% / 14%, GELU 3.5% / 13%,
Hardswish 4.9% / 21%, Mish 3.5% / 13%, Sigmoid 5.6% / 24%, Tanh 8.2% / 36%
(Sigmoid and Tanh saturate there: small exact derivatives, same absolute error).
``module.derivative_bound`` gives the figure for a module's current setting.
Non-finite inputs get the end intervals' constants (torch: NaN for SiLU, GELU,
Mish at +-inf).

Bytes kept per element: torch keeps the input (SiLU, GELU, Hardswish, Mish)
or the output (Sigmoid, Tanh) in the input dtype, 4 bytes in float32; we keep
0.5 (4 bits) or 0.25 (2 bits) at any dtype. Sigmoid and Tanh save their
output, which the next layer often saves as its input anyway (one storage,
counted once); swapping them helps only where the next layer keeps less
(an XConv layer, a 1-bit activation). Where torch supports ``inplace``
(SiLU, Hardswish, Mish), so do these.

Working memory
--------------
Besides what they keep (and the output and input gradients of backward), these
modules hold no full-size temporary: forward and backward run over consecutive
row-major blocks of at most ``max(2**20, numel / 16)`` elements (the one
exception: an output gradient whose strides admit no view of the shape needed,
which ``reshape`` copies). A norm's forward takes ``lo`` and ``D``
from the input's own min and max per group (``x -> (x - mean) * rstd`` is
monotone in floating point, so they are ``x_hat``'s), then quantizes block by
block (``t`` made in place in the block's noise, plus the noise's 64-bit draws: under two
blocks), the noise drawn block after block from one generator, values left over carried to
the next block (on CPU the very draws of one call: the codes do not depend on the blocks);
a half-precision input is not converted whole (its statistics take two passes over float32
blocks). The backward takes two passes: per-group sums ``sum(gw)``, ``sum(gw * q)`` and the
weight and bias gradients, then ``dx`` written block by block into the input gradient
(float32 accumulation over blocks, a few ulps from one reduction). With ``q = lo + D k``
(``k`` the integer level) both passes read only ``k``: where a normalization group lies
inside one weight group (batch and instance norm), the first pass sums ``g`` and ``g k`` per
group (one block: ``k`` as floats) and ``sum(g q) = lo sum(g) + D sum(g k)``; group and layer
norm, whose weight varies inside a group, dequantize ``q`` one block at a time (two blocks:
``q`` and ``gw``). The second pass is ``dx = rstd w g + offset + k_scale k`` with per-group
``offset = -rstd (mean(gw) + lo mean(gw q))`` and ``k_scale = -rstd D mean(gw q)`` (one block). Eval-mode norms need no sums. An
activation's codes are made and read in the input's memory order (channels-last
included), block by block: an int32 block of codes, looked up into the input
gradient itself. :func:`xconv.memory.fake_peak` on a float32 16x64x128x128
input with a dense output gradient: backward temporaries are the output
gradient and the input gradient plus 1/16 (norms) or 5/64 (SiLU) of the
input's bytes, where the unchunked backward took 4x (norms) and 1.25x (SiLU)
more; ResNet-18 with ``probes=16, activations="compact"`` at batch 1392 (224x224):
peak 26.88 GiB unchunked, 11.41 GiB in blocks (``lossless`` 15.14, ``exact`` 28.34).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import is_fake

from . import rng
from .bits import pack_codes, packed_bytes, unpack_codes

__all__ = [
    "NORM_BITS", "ACTIVATION_BITS", "Steps", "STEPS", "COMPACT_FOR",
    "CompactBatchNorm1d", "CompactBatchNorm2d", "CompactBatchNorm3d", "CompactGroupNorm",
    "CompactInstanceNorm1d", "CompactInstanceNorm2d", "CompactInstanceNorm3d", "CompactLayerNorm",
    "CompactSiLU", "CompactGELU", "CompactHardswish", "CompactMish", "CompactSigmoid", "CompactTanh",
]

NORM_BITS = (8, 16)
ACTIVATION_BITS = (2, 4)
_HALF = (torch.float16, torch.bfloat16)


def _check_bits(bits, allowed: tuple[int, ...], what: str) -> int:
    if isinstance(bits, bool) or bits not in allowed:
        raise ValueError(f"bits must be one of {allowed} ({what}), got {bits!r}")
    return int(bits)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch's CPU kernels compute in: float32 for half types, else the dtype itself."""
    return torch.float32 if dtype in _HALF else dtype


class _Bits:
    """The ``bits`` setting: a class attribute (what ``module.__class__ = ...`` gets) or a keyword."""

    bits: int
    _ALLOWED: tuple[int, ...] = ()
    _WHAT = ""

    def __init__(self, *args, bits: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if bits is not None:
            self.bits = _check_bits(bits, self._ALLOWED, self._WHAT)

    def extra_repr(self) -> str:
        parent = super().extra_repr()
        return f"{parent}, bits={self.bits}" if parent else f"bits={self.bits}"


# Norms -----------------------------------------------------------------------------------------

class _Layout(NamedTuple):
    """How a norm sees its input: a 4-d view ``(A, G, K, L)`` of it, the dims one normalization
    group reduces over, and the shape the affine weight broadcasts to in that view."""

    shape: tuple[int, int, int, int]
    stat_dims: tuple[int, ...]
    weight_shape: tuple[int, int, int, int]

    @property
    def group_size(self) -> int:
        return math.prod(self.shape[d] for d in self.stat_dims)

    @property
    def weight_dims(self) -> tuple[int, ...]:
        """Dims the weight and bias gradients sum over (where the weight does not vary)."""
        return tuple(d for d in range(4) if self.weight_shape[d] == 1)


#: Forward and backward work on the tensor in consecutive blocks of at most
#: ``max(_MIN_BLOCK, ceil(numel / _BLOCKS))`` elements (see "Working memory" in the module docs).
_BLOCKS = 16
_MIN_BLOCK = 2 ** 20


def _block_limit(numel: int) -> int:
    """Elements per block, a multiple of 8 (so that blocks of packed 2- or 4-bit codes start on a byte)."""
    return -(-max(_MIN_BLOCK, -(-numel // _BLOCKS)) // 8) * 8


def _blocks(shape: tuple[int, ...], limit: int) -> list[tuple[slice, ...]]:
    """Basic-slice keys cutting a tensor of ``shape`` into consecutive row-major blocks of at most
    ``limit`` elements (more than ``limit / 2`` each but the last of a row): dims before the cut
    dim one index at a time, the cut dim in runs, the dims after it whole. Depends on shapes only."""
    cut = next(d for d in range(len(shape)) if math.prod(shape[d + 1:]) <= limit)
    run = max(1, limit // math.prod(shape[cut + 1:]))
    whole = (slice(None),) * (len(shape) - cut - 1)
    return [tuple(slice(i, i + 1) for i in outer) + (slice(start, min(start + run, shape[cut])),) + whole
            for outer in itertools.product(*(range(n) for n in shape[:cut]))
            for start in range(0, shape[cut], run)]


def _part(stat: torch.Tensor, key: tuple[slice, ...]) -> torch.Tensor:
    """The part of a broadcastable per-group tensor (size 1 where it does not vary) facing block ``key``."""
    return stat[tuple(k if n != 1 else slice(None) for n, k in zip(stat.shape, key))]


class _Noise:
    """Uniform 16-bit noise levels from ``generator``: ``k`` uniform on ``0 .. 2**16 - 1``, returned as
    ``k - 2**15`` in int16. Each 64-bit draw (``random_`` over int64's full range: 64 uniform bits)
    gives four; levels left over go to the next request, so the levels do not depend on how the
    requests are cut. A quarter of the generator calls of ``torch.rand``, which takes one per value,
    and no float pass: the caller adds the levels to its float tensor, scaled, in one ``add_``."""

    _LANES = 4

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.spare = None  # levels drawn and not yet used (at most three)

    def take(self, count: int, device) -> torch.Tensor:
        have = 0 if self.spare is None else self.spare.numel()
        draws = max(0, -(-(count - have) // self._LANES))
        levels = torch.empty(draws, dtype=torch.int64, device=device)
        levels = levels.random_(-2 ** 63, None, generator=self.generator).view(torch.int16)
        if have:
            levels = torch.cat([self.spare, levels])
        self.spare = levels[count:].clone() if levels.numel() > count else None
        return levels[:count]


def _noise_levels(shape: tuple[int, ...], device, noise: _Noise) -> torch.Tensor:
    """The next ``k - 2**15`` of ``noise`` (int16), shaped ``shape``; ``u = (k + 1/2) / 2**16``."""
    return noise.take(math.prod(shape), device).view(shape)


def _batch_statistics(x4: torch.Tensor, dims: tuple[int, ...], dtype: torch.dtype):
    """``(var, mean)`` (biased) over ``dims`` in ``dtype``, keepdim: two passes over blocks (sum, then
    sum of squared deviations), so a half-precision input is never converted whole; on a CPU this is
    also about 4x faster than ``var_mean`` over BatchNorm's dims (0, 2, 3)."""
    size = math.prod(x4.shape[d] for d in dims)
    blocks = _blocks(tuple(x4.shape), _block_limit(x4.numel()))
    stat_shape = tuple(1 if d in dims else n for d, n in enumerate(x4.shape))
    total = torch.zeros(stat_shape, dtype=dtype, device=x4.device)
    for key in blocks:
        _part(total, key).add_(x4[key].to(dtype).sum(dims, keepdim=True))
    mean = total.div_(size)
    squares = torch.zeros(stat_shape, dtype=dtype, device=x4.device)
    for key in blocks:
        deviation = x4[key].to(dtype) - _part(mean, key)
        _part(squares, key).add_(deviation.mul_(deviation).sum(dims, keepdim=True))
        del deviation
    return squares.div_(size), mean


def _quantize(x4: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, dims: tuple[int, ...], bits: int,
              seed: int, dtype: torch.dtype):
    """Stochastically rounded codes of ``x_hat = (x4 - mean) * rstd`` (in ``dtype``) on a per-group grid
    ``lo + D * k``, block by block (``x_hat`` never exists whole).

    Returns ``(codes, lo, D)``: codes uint8 (8 bits) or int16 offset by -32768 (16 bits), shaped as
    ``x4``; ``lo`` and ``D`` with ``dims`` kept as size 1. ``x -> (x - mean) * rstd`` is monotone in
    floating point too (``rstd > 0``), so ``lo`` and the top come from ``x4``'s own min and max and
    equal ``x_hat``'s. The noise is drawn block after block from one generator seeded with ``seed``.
    """
    levels = 2 ** bits - 1
    lo = (x4.amin(dims, keepdim=True).to(dtype) - mean) * rstd
    step = ((x4.amax(dims, keepdim=True).to(dtype) - mean) * rstd - lo) / levels
    step = torch.where(step > 0, step, torch.ones_like(step))  # a constant group: every code 0, exact
    codes = torch.empty(x4.shape, dtype=torch.uint8 if bits == 8 else torch.int16, device=x4.device)
    noise = _Noise(rng.probe_generator(x4.device, seed))
    # t + u = x * scale + shift + (k - 2**15) / 2**16, fused (x_hat is not formed): u = (k + 1/2) / 2**16
    scale = rstd / step
    shift = -(mean * rstd + lo) / step + (2 ** 15 + 0.5) * 2 ** -16
    blocks = _blocks(tuple(x4.shape), _block_limit(x4.numel()))
    buffer = torch.empty(max(math.prod(x4[key].shape) for key in blocks), dtype=dtype, device=x4.device)
    for key in blocks:
        block = x4[key]
        t = buffer[:block.numel()].view(block.shape).copy_(_noise_levels(block.shape, block.device, noise))
        # floor(t + u), u ~ U(0, 1): up from floor(t) with probability frac(t), so E[code] = t
        torch.add(_part(shift, key), t, alpha=2 ** -16, out=t).addcmul_(block, _part(scale, key)).clamp_(0, levels)
        # to uint8 truncates, which is floor on [0, levels]; int16 codes are offset by -2**15 after flooring
        codes[key].copy_(t if bits == 8 else t.floor_().sub_(2 ** 15))
    return codes, lo, step


def _levels(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The integer levels ``k`` of ``codes`` in ``dtype`` (exact: at most 2**16 - 1); ``q = lo + D k``."""
    level = codes.to(dtype)
    if codes.dtype == torch.int16:
        level += 2 ** 15
    return level


def _dequantize(codes: torch.Tensor, lo: torch.Tensor, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _levels(codes, dtype).mul_(step).add_(lo)


def _empty_grad_like(grad_out: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]):
    """An uninitialised input gradient laid out as ``grad_out`` where it can, and its view as ``shape``."""
    grad = torch.empty_like(grad_out, dtype=dtype)
    try:
        return grad, grad.view(shape)
    except RuntimeError:  # strides the 4-d view cannot follow: row-major
        grad = torch.empty(grad_out.shape, dtype=dtype, device=grad_out.device)
        return grad, grad.view(shape)


class _CompactNormFunction(torch.autograd.Function):
    """Output from torch's forward; backward from quantized ``x_hat``, ``rstd`` and the weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, torch_forward: Callable, layout: _Layout, running, eps: float, bits: int):
        out = torch_forward(x)  # torch's own output and running-statistics update
        needs_x = ctx.needs_input_grad[0]
        needs_weight = weight is not None and ctx.needs_input_grad[1]
        batch_stats = running is None
        dtype = _compute_dtype(x.dtype)
        codes = lo = step = rstd = None
        ctx.seed = None
        if needs_x or needs_weight:
            x4 = x.reshape(layout.shape)  # (A, G, K, L), in the input's dtype
            if batch_stats:
                var, mean = _batch_statistics(x4, layout.stat_dims, dtype)
            else:  # eval-mode batch / instance norm: the running statistics, one per channel (dim 1)
                mean = running[0].to(dtype).view(1, -1, 1, 1)
                var = running[1].to(dtype).view(1, -1, 1, 1)
            rstd = (var + eps).rsqrt()
            if needs_weight or batch_stats:  # x_hat enters dx only with batch statistics
                ctx.seed = rng.next_call_seed()
                codes, lo, step = _quantize(x4, mean, rstd, layout.stat_dims, bits, ctx.seed, dtype)
            if not needs_x:
                rstd = None
        ctx.save_for_backward(codes, lo, step, rstd, weight)
        ctx.layout, ctx.batch_stats = layout, batch_stats
        ctx.x_shape, ctx.x_dtype, ctx.dtype = x.shape, x.dtype, dtype
        ctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        """Two passes over blocks: the per-group sums (and the parameter gradients), then ``dx``
        written block by block. With ``q = lo + D k`` (``k`` the integer level), ``dx`` is
        ``rstd w g + offset + k_scale k`` per group, so ``x_hat`` is never dequantized there."""
        codes, lo, step, rstd, weight = ctx.saved_tensors
        layout, dtype = ctx.layout, ctx.dtype
        stat_dims, weight_dims = layout.stat_dims, layout.weight_dims
        needs_x = ctx.needs_input_grad[0]
        needs_weight = weight is not None and ctx.needs_input_grad[1]
        needs_bias = ctx.bias_meta is not None and ctx.needs_input_grad[2]
        batch_dx = needs_x and ctx.batch_stats  # dx needs mean(gw) and mean(gw * x_hat)
        g4 = grad_out.reshape(layout.shape)  # (A, G, K, L), a view when the strides allow
        w4 = None if weight is None else weight.to(dtype).reshape(layout.weight_shape)
        blocks = _blocks(layout.shape, _block_limit(math.prod(layout.shape)))
        # a normalization group inside one weight group (batch and instance norm): w is constant on it
        nested = set(stat_dims) <= set(weight_dims)
        sums = (_nested_sums if nested else _sums)(g4, codes, lo, step, w4, layout, blocks, dtype,
                                                  batch_dx, needs_weight, needs_bias)
        sum_gw, sum_gwq, sum_gq, sum_g = sums
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            grad_x, dx4 = _empty_grad_like(grad_out, ctx.x_dtype, layout.shape)
            # rstd (gw - mean(gw) - q mean(gw q)) = rstd w g + offset + k_scale k; running statistics: rstd w g
            scale = rstd if w4 is None else rstd * w4 if nested else None  # None: w, then rstd, per block
            if batch_dx:
                mean_gw, mean_gwq = sum_gw.div_(layout.group_size), sum_gwq.div_(layout.group_size)
                offset = -rstd * (mean_gw + lo * mean_gwq)
                k_scale = -rstd * step * mean_gwq
            for key in blocks:
                g, out = g4[key], dx4[key]  # g in its own dtype: the ops below compute in `dtype`
                dx = out if out.dtype == dtype else torch.empty(out.shape, dtype=dtype, device=out.device)
                if scale is not None and batch_dx:
                    torch.addcmul(_part(offset, key), g, _part(scale, key), out=dx)
                elif scale is not None:
                    torch.mul(g, _part(scale, key), out=dx)
                else:
                    torch.mul(g, _part(w4, key), out=dx).mul_(_part(rstd, key))
                    if batch_dx:
                        dx.add_(_part(offset, key))
                if batch_dx:
                    dx.addcmul_(_levels(codes[key], dtype), _part(k_scale, key))
                if dx is not out:
                    out.copy_(dx)
                del g, dx
        if needs_weight:
            grad_weight = sum_gq.reshape(weight.shape).to(weight.dtype)
        if needs_bias:
            shape, bias_dtype = ctx.bias_meta
            grad_bias = sum_g.reshape(shape).to(bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def _group_zeros(layout: _Layout, dims: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    return torch.zeros(tuple(1 if d in dims else n for d, n in enumerate(layout.shape)), dtype=dtype, device=device)


def _nested_sums(g4, codes, lo, step, w4, layout, blocks, dtype, batch_dx, needs_weight, needs_bias):
    """``(sum gw, sum gw q, sum g q, sum g)`` when each normalization group lies inside one weight
    group: per group only ``sum g`` and ``sum g k`` (``k`` the integer level), then ``sum g q =
    lo sum g + D sum g k`` and ``sum gw q = w sum g q``; the parameter sums add the groups up."""
    stat_dims, weight_dims = layout.stat_dims, layout.weight_dims
    if not (batch_dx or needs_weight or needs_bias):  # running statistics, frozen affine: dx = rstd w g only
        return None, None, None, None
    sum_g = _group_zeros(layout, stat_dims, dtype, g4.device)
    sum_gk = _group_zeros(layout, stat_dims, dtype, g4.device) if batch_dx or needs_weight else None
    for key in blocks:
        g = g4[key].to(dtype)
        _part(sum_g, key).add_(g.sum(stat_dims, keepdim=True))
        if sum_gk is not None:
            _part(sum_gk, key).add_(_levels(codes[key], dtype).mul_(g).sum(stat_dims, keepdim=True))
        del g
    sum_gq = None if sum_gk is None else torch.addcmul(lo * sum_g, step, sum_gk)
    sum_gw = sum_gwq = None
    if batch_dx:
        sum_gw = sum_g if w4 is None else sum_g * w4
        sum_gwq = sum_gq if w4 is None else sum_gq * w4
    return (sum_gw, sum_gwq, sum_gq.sum(weight_dims, keepdim=True) if needs_weight else None,
            sum_g.sum(weight_dims, keepdim=True) if needs_bias else None)


def _sums(g4, codes, lo, step, w4, layout, blocks, dtype, batch_dx, needs_weight, needs_bias):
    """``(sum gw, sum gw q, sum g q, sum g)`` in general (group and layer norm: the weight varies inside
    a group), ``q`` dequantized one block at a time."""
    stat_dims, weight_dims = layout.stat_dims, layout.weight_dims
    sum_gw = _group_zeros(layout, stat_dims, dtype, g4.device) if batch_dx else None
    sum_gwq = _group_zeros(layout, stat_dims, dtype, g4.device) if batch_dx else None
    sum_gq = _group_zeros(layout, weight_dims, dtype, g4.device) if needs_weight else None
    sum_g = _group_zeros(layout, weight_dims, dtype, g4.device) if needs_bias else None
    if not (batch_dx or needs_weight or needs_bias):
        return sum_gw, sum_gwq, sum_gq, sum_g
    for key in blocks:
        g = g4[key].to(dtype)
        if needs_bias:
            _part(sum_g, key).add_(g.sum(weight_dims, keepdim=True))
        gw = None
        if batch_dx:
            gw = g if w4 is None else g * _part(w4, key)
            _part(sum_gw, key).add_(gw.sum(stat_dims, keepdim=True))
        if batch_dx or needs_weight:
            q = _dequantize(codes[key], _part(lo, key), _part(step, key), dtype)
            if needs_weight:
                _part(sum_gq, key).add_(q.mul_(g).sum(weight_dims, keepdim=True))
                if batch_dx:  # (g q) w: gw q up to the order of two roundings
                    _part(sum_gwq, key).add_(q.mul_(_part(w4, key)).sum(stat_dims, keepdim=True))
            elif batch_dx:
                _part(sum_gwq, key).add_(q.mul_(gw).sum(stat_dims, keepdim=True))
            del q
        del g, gw
    return sum_gw, sum_gwq, sum_gq, sum_g


class _CompactNorm(_Bits):
    """Shared forward of the compact norms; subclasses say how they group the input."""

    bits = 8
    _ALLOWED, _WHAT = NORM_BITS, "bits kept per normalized element"

    def _layout(self, input: torch.Tensor) -> _Layout | None:
        raise NotImplementedError

    def _running_stats(self):
        """``(running_mean, running_var)`` when the output uses them, else None (batch statistics)."""
        return None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        parameters = [p for p in (self.weight, self.bias) if p is not None]
        records = torch.is_grad_enabled() and (input.requires_grad or any(p.requires_grad for p in parameters))
        bits = _check_bits(self.bits, NORM_BITS, self._WHAT)
        layout = self._layout(input) if records and input.is_floating_point() and input.numel() else None
        if layout is None or not _keeps_less(input, layout, bits):
            return super().forward(input)  # also raises torch's own errors on bad input
        return _CompactNormFunction.apply(input, self.weight, self.bias, super().forward, layout,
                                          self._running_stats(), self.eps, bits)


def _keeps_less(input: torch.Tensor, layout: _Layout, bits: int) -> bool:
    """Whether codes plus ``lo``, ``D``, ``rstd`` per group are fewer bytes than the input torch keeps."""
    groups = input.numel() // layout.group_size
    stat_bytes = torch.finfo(_compute_dtype(input.dtype)).bits // 8
    return input.numel() * bits // 8 + 3 * groups * stat_bytes < input.numel() * input.element_size()


class _CompactBatchNorm(_CompactNorm):
    def _layout(self, input):
        try:
            self._check_input_dim(input)
        except ValueError:
            return None
        n, c = input.shape[:2]
        if c != self.num_features:
            return None
        return _Layout((n, c, 1, math.prod(input.shape[2:])), (0, 2, 3), (1, c, 1, 1))

    def _running_stats(self):
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        return None if batch_stats else (self.running_mean, self.running_var)


class _CompactInstanceNorm(_CompactNorm):
    def _layout(self, input):
        try:
            self._check_input_dim(input)
        except ValueError:
            return None
        batched = input.dim() == self._get_no_batch_dim() + 1
        n, c = input.shape[:2] if batched else (1, input.shape[0])
        if self.affine and c != self.num_features:
            return None
        return _Layout((n, c, 1, math.prod(input.shape[2 if batched else 1:])), (2, 3), (1, c, 1, 1))

    def _running_stats(self):
        input_stats = self.training or not self.track_running_stats
        return None if input_stats else (self.running_mean, self.running_var)


class CompactGroupNorm(_CompactNorm, nn.GroupNorm):
    """Drop-in ``nn.GroupNorm`` keeping ``x_hat`` at ``bits`` (8 or 16) per element (see module docs)."""

    def _layout(self, input):
        if input.dim() < 2 or input.shape[1] != self.num_channels or input.shape[1] % self.num_groups:
            return None
        n, c, groups = input.shape[0], input.shape[1], self.num_groups
        return _Layout((n, groups, c // groups, math.prod(input.shape[2:])), (2, 3), (1, groups, c // groups, 1))


class CompactLayerNorm(_CompactNorm, nn.LayerNorm):
    """Drop-in ``nn.LayerNorm`` keeping ``x_hat`` at ``bits`` (8 or 16) per element (see module docs)."""

    def _layout(self, input):
        shape = tuple(self.normalized_shape)
        if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape):]) != shape:
            return None
        size = math.prod(shape)
        return _Layout((1, input.numel() // size, size, 1), (2, 3), (1, 1, size, 1))


def _norm(name: str, base: type, kind: type) -> type:
    doc = f"Drop-in ``nn.{base.__name__}`` keeping ``x_hat`` at ``bits`` (8 or 16) per element (see module docs)."
    return type(name, (kind, base), {"__doc__": doc, "__module__": __name__})


CompactBatchNorm1d = _norm("CompactBatchNorm1d", nn.BatchNorm1d, _CompactBatchNorm)
CompactBatchNorm2d = _norm("CompactBatchNorm2d", nn.BatchNorm2d, _CompactBatchNorm)
CompactBatchNorm3d = _norm("CompactBatchNorm3d", nn.BatchNorm3d, _CompactBatchNorm)
CompactInstanceNorm1d = _norm("CompactInstanceNorm1d", nn.InstanceNorm1d, _CompactInstanceNorm)
CompactInstanceNorm2d = _norm("CompactInstanceNorm2d", nn.InstanceNorm2d, _CompactInstanceNorm)
CompactInstanceNorm3d = _norm("CompactInstanceNorm3d", nn.InstanceNorm3d, _CompactInstanceNorm)


# Smooth activations ------------------------------------------------------------------------------

class Steps(NamedTuple):
    """A piecewise-constant stand-in for a derivative: ``values[k]`` on ``[breaks[k-1], breaks[k])``."""

    breaks: tuple[float, ...]  # sorted; code(x) = #{b in breaks : b <= x}
    values: tuple[float, ...]  # len(breaks) + 1 constants
    bound: float  # max over real x of |values[code(x)] - f'(x)| (f' = torch's backward in float64)


def _hardswish_steps(bits: int) -> Steps:
    """The exact minimax steps of hardswish' (0 for x <= -3, x/3 + 1/2 on (-3, 3), 1 for x >= 3)."""
    if bits == 2:  # each interval's derivative spans 1/2: (-inf,-1.5) {0} u (-1/2, 0) ... [1.5, inf) [1, 3/2)
        return Steps((-1.5, 0.0, 1.5), (-0.25, 0.25, 0.75, 1.25), 0.25)
    inner = 2 ** bits - 2  # equal pieces of (-3, 3); the two tails keep their exact values 0 and 1
    cuts = tuple(-3.0 + 6.0 * k / inner for k in range(1, inner))
    middles = tuple((-3.0 + 6.0 * (k + 0.5) / inner) / 3.0 + 0.5 for k in range(inner))
    # x = -3 belongs to the left tail (torch: derivative 0 there): the first break is just above -3
    return Steps((math.nextafter(-3.0, 0.0),) + cuts + (3.0,), (0.0,) + middles + (1.0,), 1.0 / inner)


#: The derivative steps of each activation kind and bit width (see the module docstring).
STEPS: dict[tuple[str, int], Steps] = {
    ("silu", 2): Steps(
        (-0.64122, 0.0, 0.64122),
        (0.0501147, 0.3500335, 0.6499575, 0.9498812), 0.15),
    ("silu", 4): Steps(
        (-3.07292, -1.34652, -1.00262, -0.75046, -0.5392, -0.34978, -0.17224, 0.0, 0.17224, 0.34978, 0.5392,
         0.75046, 1.00264, 1.34656, 5.82534),
        (-0.0428439, -0.0569968, 0.028691, 0.1143787, 0.2000668, 0.285759, 0.3714529, 0.457147, 0.5428431,
         0.6285374, 0.714232, 0.7999251, 0.8856175, 0.971311, 1.0569953, 1.0070755), 0.04286),
    ("gelu", 2): Steps(
        (-0.41742, 0.0, 0.41744),
        (0.0283177, 0.3427685, 0.6572236, 0.9716823), 0.1573),
    ("gelu", 4): Steps(
        (-1.95728, -0.85124, -0.6444, -0.48692, -0.35194, -0.22916, -0.11308, 0.0, 0.11308, 0.22918, 0.35196,
         0.48694, 0.64444, 0.8513, 2.48074),
        (-0.0449184, -0.0839878, 0.0058522, 0.0956931, 0.1855376, 0.2753871, 0.3652314, 0.4550714, 0.5449128,
         0.6347607, 0.7246129, 0.8144624, 0.904312, 0.9941601, 1.0839849, 1.0195321), 0.04494),
    ("gelu_tanh", 2): Steps(
        (-0.41762, 0.0, 0.41762),
        (0.0282462, 0.3427414, 0.6572439, 0.9717471), 0.1573),
    ("gelu_tanh", 4): Steps(
        (-1.96514, -0.8524, -0.64494, -0.48718, -0.35206, -0.22922, -0.1131, 0.0, 0.1131, 0.22922, 0.35206,
         0.48718, 0.64496, 0.85242, 2.48458),
        (-0.0449255, -0.0840694, 0.0057867, 0.0956423, 0.1854981, 0.2753549, 0.3652093, 0.4550644, 0.5449197,
         0.6347753, 0.7246305, 0.8144886, 0.9043514, 0.9942133, 1.0840668, 1.0195695), 0.04495),
    ("hardswish", 2): _hardswish_steps(2),
    ("hardswish", 4): _hardswish_steps(4),
    ("mish", 2): Steps(
        (-0.69318, -0.17424, 0.30966),
        (0.0375967, 0.3378535, 0.6381151, 0.9383745), 0.1502),
    ("mish", 4): Steps(
        (-3.18594, -1.30152, -1.0005, -0.785, -0.60828, -0.45298, -0.31018, -0.17424, -0.04086, 0.09398,
         0.23494, 0.38876, 0.5679, 0.80502, 4.2927),
        (-0.0428913, -0.0696361, 0.0161466, 0.1019335, 0.1877232, 0.27351, 0.3592971, 0.4450878, 0.5308799,
         0.6166703, 0.7024604, 0.7882517, 0.8740432, 0.9598335, 1.0456067, 1.0013575), 0.04291),
    ("sigmoid", 2): Steps(
        (-1.76274, 1.76274, 13.57792),
        (0.0624994, 0.1875003, 0.062501, 6e-07), 0.06251),
    ("sigmoid", 4): Steps(
        (-3.4001, -2.63394, -2.14592, -1.76276, -1.42542, -1.09862, -0.739, -0.00402, 0.739, 1.09862, 1.42542,
         1.76276, 2.14592, 2.63394, 3.40012),
        (0.0156245, 0.0468736, 0.0781227, 0.1093727, 0.1406233, 0.1718736, 0.2031238, 0.2343744, 0.2343757,
         0.2031255, 0.1718754, 0.1406252, 0.1093743, 0.078124, 0.0468741, 0.0156245), 0.01563),
    ("tanh", 2): Steps(
        (-0.88138, -0.003, 0.88138),
        (0.2499907, 0.7499932, 0.7500048, 0.2499977), 0.2501),
    ("tanh", 4): Steps(
        (-1.70006, -1.31696, -1.07294, -0.88136, -0.7127, -0.5493, -0.36948, 0.3695, 0.5493, 0.7127, 0.88136,
         1.07294, 1.31694, 1.7, 6.24306),
        (0.0624956, 0.1874931, 0.3124961, 0.4375002, 0.5625004, 0.687498, 0.812502, 0.9375059, 0.8125095,
         0.6875132, 0.5625151, 0.4375132, 0.3125107, 0.1875111, 0.0625125, 7.6e-06), 0.06252),
}

_STEP_TENSORS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _breaks_rounded_up(breaks: tuple[float, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """Each breakpoint as the smallest ``dtype`` value >= it: for any ``dtype`` x, ``x >= b`` holds
    exactly when ``x >= rounded(b)``, so the codes are those of the real breakpoints."""
    exact = torch.tensor(breaks, dtype=torch.float64)
    rounded = exact.to(dtype)
    below = rounded.double() < exact
    rounded = torch.where(below, torch.nextafter(rounded, torch.full_like(rounded, math.inf)), rounded)
    return rounded.to(device)


def _step_tensors(key: tuple[str, int], dtype: torch.dtype, device: torch.device, fake: bool = False):
    """``(breaks in dtype, values in the compute dtype)`` for ``STEPS[key]`` on ``device``, cached.

    ``fake``: for fake tensors (:func:`xconv.fake_peak`), made afresh. Only real tensors are cached:
    made under a ``FakeTensorMode`` they are fake, and a later real step would read no values."""
    cache_key = (key, dtype, device)
    tensors = None if fake else _STEP_TENSORS.get(cache_key)
    if tensors is None:
        steps = STEPS[key]
        values = torch.tensor(steps.values, dtype=torch.float64).to(_compute_dtype(dtype)).to(device)
        tensors = (_breaks_rounded_up(steps.breaks, dtype, device), values)
        if not is_fake(values):
            _STEP_TENSORS[cache_key] = tensors
    return tensors


def _memory_order(t: torch.Tensor) -> list[int] | None:
    """Dims of ``t`` from outermost to innermost in memory: ``t.permute(order)`` is contiguous
    (identity for a contiguous tensor), None when no order is (overlapping or gapped strides)."""
    if t.is_contiguous():
        return list(range(t.dim()))
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    return order if t.permute(order).is_contiguous() else None


def _step_codes(block: torch.Tensor, breaks: torch.Tensor) -> torch.Tensor:
    """``torch.bucketize(block, breaks, right=True)`` as uint8: the number of breaks at or below each
    element (NaN counts as above every break, as in bucketize). One vectorised comparison per break:
    for the 3-15 breaks of 2-4-bit codes about twice as fast on a CPU as bucketize's binary search."""
    codes = torch.full(block.shape, breaks.numel(), dtype=torch.uint8, device=block.device)
    below = torch.empty(block.shape, dtype=torch.bool, device=block.device)
    for index in range(breaks.numel()):
        codes.sub_(torch.lt(block, breaks[index], out=below).view(torch.uint8))
    return codes


class _StepDerivativeFunction(torch.autograd.Function):
    """Output from torch's forward; ``grad_out * values[code(x)]`` in backward, codes packed.

    Codes are packed in ``x``'s memory order (row-major for a contiguous ``x``), block by block in
    forward (bucketize and pack) and backward (unpack, look up, multiply into the input gradient)."""

    @staticmethod
    def forward(ctx, x, torch_forward: Callable, key: tuple[str, int], inplace: bool):
        breaks, _ = _step_tensors(key, x.dtype, x.device, is_fake(x))
        bits = key[1]
        order = _memory_order(x)
        flat = (x if order is None else x.permute(order)).reshape(-1)  # a view (strided if order is None) if any
        order = order or list(range(x.dim()))
        packed = torch.empty(packed_bytes(flat.numel(), bits), dtype=torch.uint8, device=x.device)
        limit, per_byte = _block_limit(flat.numel()), 8 // bits
        for start in range(0, flat.numel(), limit):  # before in place
            block = flat[start:start + limit].contiguous()  # copied only if strided (bucketize would)
            codes = _step_codes(block, breaks)
            del block
            packed[start // per_byte:(start + limit) // per_byte].copy_(pack_codes(codes, bits))
            del codes
        del flat
        out = torch_forward(x)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(packed)
        ctx.shape, ctx.order, ctx.key, ctx.dtype, ctx.device = x.shape, order, key, x.dtype, x.device
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        _, values = _step_tensors(ctx.key, ctx.dtype, ctx.device, is_fake(grad_out))
        bits, order = ctx.key[1], ctx.order
        permuted = [ctx.shape[d] for d in order]
        numel = math.prod(permuted)
        grad_flat = torch.empty(numel, dtype=grad_out.dtype, device=grad_out.device)
        grad_in = grad_flat.view(permuted).permute([order.index(d) for d in range(len(order))])
        g_flat = grad_out.permute(order).reshape(-1)  # a view when laid out as x (or expanded)
        limit, per_byte = _block_limit(numel), 8 // bits
        for start in range(0, numel, limit):
            end = min(start + limit, numel)
            codes = unpack_codes(packed[start // per_byte:-(-end // per_byte)], bits, (end - start,))
            index = codes.to(torch.int32)
            del codes
            out = grad_flat[start:end]
            if out.dtype == values.dtype:  # the slopes looked up into the gradient itself, then scaled
                torch.index_select(values, 0, index, out=out).mul_(g_flat[start:end])
            else:  # computed in the compute dtype, rounded once to the gradient's dtype
                out.copy_(values.index_select(0, index).mul_(g_flat[start:end]))
            del index
        return grad_in, None, None, None


class _CompactActivation(_Bits):
    bits = 4
    _ALLOWED, _WHAT = ACTIVATION_BITS, "bits per element of the derivative code"
    _kind = ""

    def steps_kind(self) -> str:
        return self._kind

    @property
    def derivative_bound(self) -> float:
        """Largest ``|kept derivative - f'(x)|`` over all real x at the current ``bits``."""
        return STEPS[(self.steps_kind(), _check_bits(self.bits, ACTIVATION_BITS, self._WHAT))].bound

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bits = _check_bits(self.bits, ACTIVATION_BITS, self._WHAT)
        if not (torch.is_grad_enabled() and input.requires_grad and input.is_floating_point()):
            return super().forward(input)
        return _StepDerivativeFunction.apply(input, super().forward, (self.steps_kind(), bits),
                                             bool(getattr(self, "inplace", False)))


def _activation(name: str, base: type, kind: str) -> type:
    doc = (f"Drop-in ``nn.{base.__name__}`` keeping a ``bits``-bit (2 or 4) code of its derivative "
           "per element (see module docs).")
    return type(name, (_CompactActivation, base), {"__doc__": doc, "__module__": __name__, "_kind": kind})


CompactSiLU = _activation("CompactSiLU", nn.SiLU, "silu")
CompactHardswish = _activation("CompactHardswish", nn.Hardswish, "hardswish")
CompactMish = _activation("CompactMish", nn.Mish, "mish")
CompactSigmoid = _activation("CompactSigmoid", nn.Sigmoid, "sigmoid")
CompactTanh = _activation("CompactTanh", nn.Tanh, "tanh")


class CompactGELU(_CompactActivation, nn.GELU):
    """Drop-in ``nn.GELU`` (``approximate="none"`` or ``"tanh"``) keeping a ``bits``-bit (2 or 4)
    code of its derivative per element (see module docs)."""

    def steps_kind(self) -> str:
        return "gelu" if self.approximate == "none" else "gelu_tanh"


#: The compact module replacing each plain torch module (exact classes only).
COMPACT_FOR = {
    nn.BatchNorm1d: CompactBatchNorm1d, nn.BatchNorm2d: CompactBatchNorm2d, nn.BatchNorm3d: CompactBatchNorm3d,
    nn.GroupNorm: CompactGroupNorm, nn.InstanceNorm1d: CompactInstanceNorm1d,
    nn.InstanceNorm2d: CompactInstanceNorm2d, nn.InstanceNorm3d: CompactInstanceNorm3d,
    nn.LayerNorm: CompactLayerNorm, nn.SiLU: CompactSiLU, nn.GELU: CompactGELU, nn.Hardswish: CompactHardswish,
    nn.Mish: CompactMish, nn.Sigmoid: CompactSigmoid, nn.Tanh: CompactTanh,
}
