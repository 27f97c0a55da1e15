"""xconv.lossless: savers that keep less than torch and give torch's outputs and gradients bit for bit.

Every comparison runs the plain torch module and its lossless twin (converted in place through
``__class__``, as LOSSLESS_FOR is meant to be used) on the same non-leaf input from the same
seed, and asserts: outputs and input gradients identical bit for bit (NaN payloads and the sign
of zero included), the global random stream in the same state afterwards, and fewer bytes kept
for backward by both counts (saved-tensor hooks and the graph walk), or the same bytes where the
saver falls back to torch.
"""
import copy
import itertools

import pytest
import torch
import torch.nn as nn
from single_thread import one_torch_thread  # noqa: F401

from xconv import lossless
from xconv.bits import packed_bytes
from xconv.lossless import LOSSLESS_FOR
from xconv.memory import SavedTensorMeter, kept_bytes

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
_SAME_WIDTH_INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (so NaN == NaN, and -0.0 != 0.0)."""
    return (a.shape == b.shape and a.dtype == b.dtype
            and torch.equal(a.view(_SAME_WIDTH_INT[a.dtype]), b.view(_SAME_WIDTH_INT[b.dtype])))


def as_lossless(plain: nn.Module) -> nn.Module:
    module = copy.deepcopy(plain)
    module.__class__ = LOSSLESS_FOR[type(plain)]
    return module


def forward_backward(module, x, seed=0):
    """Output, gradient at the module's input (strides as the backward made them), (hook bytes,
    walk bytes) kept, and the next draws of the global RNG."""
    leaf = x.detach().clone().requires_grad_()
    inp = leaf * 1  # a non-leaf input, as inside a network (in-place layers need one)
    torch.manual_seed(seed)
    with SavedTensorMeter() as meter:
        out = module(inp)
    kept = (meter.total_bytes, kept_bytes(out))
    after = torch.rand(3)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    if out is inp:  # in place: the gradient reaches the leaf through the `* 1`
        out.backward(grad)
        return out.detach(), leaf.grad, kept, after
    (grad_in,) = torch.autograd.grad(out, inp, grad)
    return out.detach(), grad_in, kept, after


def assert_same_as_torch(plain, x, fallback=False):
    """The lossless twin of ``plain`` gives torch's results on ``x`` and keeps less (or, falling back, the same)."""
    theirs = forward_backward(plain, x)
    ours = forward_backward(as_lossless(plain), x)
    assert identical(ours[0], theirs[0]), "outputs differ"
    assert identical(ours[1], theirs[1]), "input gradients differ"
    assert ours[1].stride() == theirs[1].stride(), "input gradients are laid out differently"
    assert torch.equal(ours[3], theirs[3]), "the global random stream differs"
    (hooks, walk), (torch_hooks, torch_walk) = ours[2], theirs[2]
    assert hooks <= walk and torch_hooks <= torch_walk
    if fallback:
        assert (hooks, walk) == (torch_hooks, torch_walk)
    else:
        assert walk < torch_walk and hooks < torch_hooks, (ours[2], theirs[2])
    return ours


def tied(shape, dtype, seed=0):
    """Small integers (many ties), a few -inf, and NaN twice in a row (torch's last NaN wins)."""
    x = torch.randint(-3, 4, shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    x.view(-1)[1::7] = float("-inf")
    x.view(-1)[x.numel() // 2:x.numel() // 2 + 2] = float("nan")
    return x


# Max pooling ------------------------------------------------------------------------------------

MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
MAX_POOL_INPUT = {1: (2, 3, 11), 2: (2, 3, 7, 6), 3: (1, 2, 5, 6, 5)}
GEOMETRIES = [(k, s, p, d, c)
              for k, s, p, d, c in itertools.product((1, 2, 3), (1, 2, 3), (0, 1), (1, 2), (False, True))
              if p <= k // 2]  # torch: padding at most half the kernel


@pytest.fixture(params=["table", "per-coordinate"])
def offsets_path(request, monkeypatch):
    """Offsets by lookup table (the default), or per coordinate (as for windows wider than the input)."""
    if request.param == "per-coordinate":
        monkeypatch.setattr(lossless, "_MAX_TABLE", 0)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", GEOMETRIES)
def test_max_pool_is_torch_bit_for_bit(dims, dtype, kernel, stride, padding, dilation, ceil_mode, offsets_path):
    """... and keeps the offsets: packed bits per output, as the formula says."""
    plain = MAX_POOL[dims](kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    out, _, (hooks, _), _ = assert_same_as_torch(plain, tied(MAX_POOL_INPUT[dims], dtype))
    assert hooks == packed_bytes(out.numel(), lossless._code_bits(kernel ** dims))


@pytest.mark.parametrize("plain,shape", [(nn.MaxPool2d(3, 1, 1), (2, 3, 5, 2)), (nn.MaxPool2d(2, 1, 1, (1, 2)), (2, 3, 4, 2)),
                                         (nn.MaxPool3d(3, 2, 1), (1, 2, 4, 2, 5))], ids=repr)
def test_max_pool_windows_wider_than_the_input_take_the_per_coordinate_path(plain, shape):
    """Two cells of such a window lie the same flat distance from its first cell, so no table can
    tell them apart: the offsets are computed per coordinate there."""
    kernel, dilation = (lossless._ntuple(v, len(shape) - 2) for v in (plain.kernel_size, plain.dilation))
    assert lossless._cell_deltas(shape[2:], kernel, dilation) is None
    assert_same_as_torch(plain, tied(shape, torch.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("plain", [nn.MaxPool2d(3, 2, 1), nn.MaxPool2d((2, 3), (1, 2), (1, 0), (2, 1), ceil_mode=True)],
                         ids=repr)
def test_max_pool_2d_layouts_and_unbatched_inputs(plain, dtype):
    x = tied((2, 5, 8, 7), dtype)
    for view in (x.contiguous(memory_format=torch.channels_last), x[0], x[:, :, ::2], x.transpose(2, 3)):
        assert_same_as_torch(plain, view)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_max_pool_1d_and_3d_layouts_and_unbatched_inputs(dtype):
    x = tied((2, 4, 9), dtype)
    for view in (x[0], x.transpose(1, 2).contiguous().transpose(1, 2), x[..., ::2]):
        assert_same_as_torch(nn.MaxPool1d(3, 2, 1, dilation=2), view)
    x = tied((2, 3, 4, 5, 6), dtype)
    for view in (x[0], x.contiguous(memory_format=torch.channels_last_3d), x[..., ::2]):
        assert_same_as_torch(nn.MaxPool3d(2, 1, 1), view)


def test_max_pool_1d_every_small_geometry_including_windows_without_cells():
    """Lengths 1..6 with every geometry. Some windows hold no input cell at all (padding plus
    dilation): torch's index there points past the input and its own backward writes out of
    bounds (heap corruption), so those fall back to torch and only their forward is compared."""
    fell_back = 0
    for length, (k, s, p, d, c) in itertools.product(range(1, 7), GEOMETRIES):
        plain = nn.MaxPool1d(k, s, p, d, ceil_mode=c)
        x = tied((2, 3, length), torch.float32, seed=length)
        try:
            expected = plain(x)
        except RuntimeError:  # torch's own "output size is too small"
            continue
        if lossless._every_window_holds_a_cell(length, expected.shape[-1], k, s, p, d):
            assert_same_as_torch(plain, x)
            continue
        fell_back += 1
        leaf = x.clone().requires_grad_()
        out = as_lossless(plain)(leaf)
        assert identical(out.detach(), expected) and kept_bytes(out) == kept_bytes(plain(leaf)) > 0
    assert fell_back > 0


@pytest.mark.parametrize("dims,fmt", [(1, torch.contiguous_format), (2, torch.contiguous_format),
                                      (2, torch.channels_last), (3, torch.contiguous_format),
                                      (3, torch.channels_last_3d)], ids=str)
def test_max_pool_windows_of_only_minus_infinity(dims, fmt):
    """Where a window holds only -inf, torch keeps its first cell, except its channels-last 3d
    kernel, whose index then lies outside the window: there the saver keeps torch's indices."""
    x = torch.full(MAX_POOL_INPUT[dims], -float("inf"))
    x.view(-1)[::11] = 1.0
    x = x.contiguous(memory_format=fmt)
    for plain in (MAX_POOL[dims](2, 1, 1), MAX_POOL[dims](3, 2, 1, ceil_mode=True)):
        ours = assert_same_as_torch(plain, x)
        out, indices = lossless._MAX_POOL[dims](x, plain.kernel_size, plain.stride, plain.padding,
                                                ceil_mode=plain.ceil_mode, return_indices=True)
        geometry = (x.shape[-dims:],) + tuple((v,) * dims for v in (plain.kernel_size, plain.stride, plain.padding, 1))
        _, inside = lossless._window_offsets(indices, geometry)
        assert inside or fmt == torch.channels_last_3d  # torch 2.14: outside only there
        kept = packed_bytes(out.numel(), lossless._code_bits(plain.kernel_size ** dims)) if inside else 8 * out.numel()
        assert ours[2] == (kept, 8 + kept)  # the walk also sees the 8-byte scalar of the input's `* 1`


def test_max_pool_offsets_are_converted_in_chunks(monkeypatch):
    monkeypatch.setattr(lossless, "_CHUNK_OUTPUTS", 5)  # several slabs of dim 0, uneven last one
    assert_same_as_torch(nn.MaxPool2d(3, 2, 1), tied((7, 3, 9, 8), torch.float32))
    assert_same_as_torch(nn.MaxPool2d(2), tied((3, 9, 8), torch.bfloat16))


@pytest.mark.parametrize("kernel,bits", [(1, 1), (2, 2), ((2, 2), 2), (3, 4), ((4, 4), 4), ((4, 5), 8), ((16, 16), 8)])
def test_max_pool_keeps_the_fewest_bits_per_output(kernel, bits):
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = lossless.LosslessMaxPool2d(kernel, stride=1)(x)
    assert kept_bytes(out) == -(-out.numel() * bits // 8)


def test_max_pool_falls_back_to_torch():
    x = torch.randn(1, 2, 20, 20)
    assert_same_as_torch(nn.MaxPool2d(17), x, fallback=True)  # 289 cells: an offset no longer fits a byte
    assert_same_as_torch(nn.MaxPool2d((16, 16), 1), x)  # 256 cells: still does
    plain, ours = nn.MaxPool2d(2, return_indices=True), lossless.LosslessMaxPool2d(2, return_indices=True)
    (out, indices), (our_out, our_indices) = plain(x), ours(x.clone().requires_grad_())
    assert torch.equal(out, our_out) and torch.equal(indices, our_indices)
    assert our_out.grad_fn.name() == "MaxPool2DWithIndicesBackward0"
    with torch.no_grad():
        out = lossless.LosslessMaxPool2d(2)(x.clone().requires_grad_())
    assert out.grad_fn is None and torch.equal(out, nn.MaxPool2d(2)(x))


# Average pooling --------------------------------------------------------------------------------

AVG_POOLS = [
    (nn.AvgPool1d(3, 2, 1), (2, 3, 11)),
    (nn.AvgPool1d(2, ceil_mode=True, count_include_pad=False), (2, 3, 11)),
    (nn.AvgPool1d(3, 1, 1), (3, 11)),
    (nn.AvgPool2d(3, 2, 1), (2, 3, 9, 8)),
    (nn.AvgPool2d((2, 3), (1, 2), (1, 1), ceil_mode=True, count_include_pad=False), (2, 3, 9, 8)),
    (nn.AvgPool2d(3, 2, 1, divisor_override=5), (3, 9, 8)),
    (nn.AvgPool3d(2, 1, 1), (2, 3, 4, 5, 6)),
    (nn.AvgPool3d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=7), (3, 4, 5, 6)),
    (nn.AdaptiveAvgPool1d(4), (2, 3, 11)),
    (nn.AdaptiveAvgPool1d(5), (3, 11)),
    (nn.AdaptiveAvgPool2d((3, None)), (2, 3, 9, 8)),
    (nn.AdaptiveAvgPool2d(5), (3, 9, 8)),
    (nn.AdaptiveAvgPool3d((2, 3, 4)), (2, 3, 4, 5, 6)),
    (nn.AdaptiveAvgPool3d(3), (3, 4, 5, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("plain,shape", AVG_POOLS, ids=lambda v: repr(v) if isinstance(v, nn.Module) else str(v))
def test_average_pools_keep_only_the_shape(plain, shape, dtype):
    if isinstance(plain, nn.AvgPool3d) and dtype == torch.bfloat16:
        with pytest.raises(NotImplementedError):  # torch's CPU avg_pool3d has no bf16 kernel
            plain(torch.randn(shape, dtype=dtype))
        return
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    views = [x, x[..., ::2], x.transpose(-1, -2)]
    if x.dim() == 4:
        views.append(x.contiguous(memory_format=torch.channels_last))  # other kernels, other rounding
    if x.dim() == 5:
        views.append(x.contiguous(memory_format=torch.channels_last_3d))
    for view in views:
        ours = assert_same_as_torch(plain, view)
        assert ours[2] == (0, 8)  # nothing but the 8-byte scalar of the input's `* 1`


@pytest.mark.parametrize("plain,shape", [(nn.AdaptiveAvgPool1d(1), (2, 3, 7)), (nn.AdaptiveAvgPool2d(1), (2, 3, 7, 5)),
                                         (nn.AdaptiveAvgPool2d((1, None)), (2, 3, 7, 1)),
                                         (nn.AdaptiveAvgPool3d(1), (2, 3, 4, 5, 6))])
def test_adaptive_pools_that_torch_computes_as_a_mean_are_left_to_torch(plain, shape):
    assert_same_as_torch(plain, torch.randn(shape), fallback=True)  # torch keeps nothing there either


# Dropout ----------------------------------------------------------------------------------------

DROPOUT_INPUTS = [(nn.Dropout, [(2, 3, 5, 4), (7,)]), (nn.Dropout1d, [(2, 3, 5), (3, 5)]),
                  (nn.Dropout2d, [(2, 3, 5, 4), (3, 5, 4)]), (nn.Dropout3d, [(2, 3, 5, 4, 3), (3, 5, 4, 3)]),
                  (nn.AlphaDropout, [(2, 3, 5, 4), (9,)])]


@pytest.mark.filterwarnings("ignore:dropout2d")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("cls,shapes", DROPOUT_INPUTS, ids=lambda v: getattr(v, "__name__", ""))
def test_dropout_draws_what_torch_draws_and_keeps_bits(cls, shapes, p, inplace, dtype):
    for shape in shapes:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        x.view(-1)[::5] = 0.0  # zeros in the input: the mask is not `output != 0`
        views = [x, x[..., ::2]] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])
        for view in views:
            assert_same_as_torch(cls(p, inplace), view)


@pytest.mark.filterwarnings("ignore:dropout2d")
@pytest.mark.parametrize("cls", [nn.Dropout, nn.Dropout2d, nn.AlphaDropout])
def test_dropout_without_randomness_is_torch_itself(cls):
    x = torch.randn(2, 3, 4, 4)
    assert_same_as_torch(cls(0.0), x, fallback=True)
    assert_same_as_torch(cls(0.5).eval(), x, fallback=True)
    torch.manual_seed(0)
    with torch.no_grad():
        out = as_lossless(cls(0.5))(x)
    torch.manual_seed(0)
    assert torch.equal(out, cls(0.5)(x))


def test_inplace_savers_work_in_place():
    for plain in (nn.Dropout(0.3, inplace=True), nn.Dropout2d(0.3, inplace=True), nn.ReLU6(inplace=True),
                  nn.Hardtanh(-0.5, 0.5, inplace=True)):
        x = torch.randn(2, 3, 4, 4, requires_grad=True) * 1
        before = x._version
        out = as_lossless(plain)(x)
        assert out.data_ptr() == x.data_ptr() and x._version > before
        out.sum().backward()


class _EveryKind(nn.Module):
    """A small network through every saver, so the random stream runs through several dropouts."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Dropout2d(0.3), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(8, 8, 3, padding=1), nn.Hardtanh(-0.5, 0.5, inplace=True), nn.Dropout(0.4, inplace=True),
            nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(3))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(72, 16), nn.AlphaDropout(0.2),
                                  nn.Unflatten(1, (4, 4)), nn.MaxPool1d(2), nn.AvgPool1d(2), nn.Dropout1d(0.5))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_converted_network_trains_exactly_as_torch(dtype):
    torch.manual_seed(0)
    plain = _EveryKind().to(dtype)
    ours = copy.deepcopy(plain)
    converted = 0
    for module in ours.modules():
        if type(module) in LOSSLESS_FOR:
            module.__class__ = LOSSLESS_FOR[type(module)]
            converted += 1
    assert converted == 12
    x = torch.randn(4, 3, 12, 12).to(dtype)
    results = []
    for model in (plain, ours):
        torch.manual_seed(7)
        with SavedTensorMeter(model) as meter:
            out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()], meter.total_bytes, torch.rand(2)))
    (out, grads, saved, after), (our_out, our_grads, our_saved, our_after) = results
    assert identical(our_out, out) and torch.equal(our_after, after)
    assert all(identical(a, b) for a, b in zip(our_grads, grads))
    assert our_saved < saved


# Hardtanh / ReLU6 -------------------------------------------------------------------------------

def clamp_input(plain, dtype):
    """The bounds, values beside them (bf16 rounds -0.301 up, past the bound), inf, NaN near the
    start (in torch's vectorised loop, which zeroes the gradient there) and NaN last (in its scalar
    tail, which passes it)."""
    special = [plain.min_val, plain.max_val, float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -0.301, -0.3,
               0.7, 0.69, 6.0, 5.99, -1.0, 1.0, -0.30078125, 0.69921875, -2.0, 3.0]
    return torch.cat([torch.tensor(special), 3 * torch.randn(45, generator=torch.Generator().manual_seed(3)),
                      torch.linspace(-0.31, -0.29, 40), torch.tensor([float("nan")])]).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("plain", [nn.Hardtanh(), nn.ReLU6(), nn.Hardtanh(-2, 3), nn.Hardtanh(-0.301, 0.7)], ids=repr)
def test_clamps_keep_one_bit_and_match_torch_at_the_bounds(plain, inplace, dtype):
    plain.inplace = inplace
    x = clamp_input(plain, dtype)
    assert_same_as_torch(plain, x)
    assert x.numel() % 8 == 1  # so the last element is in the scalar tail for every dtype
    assert_same_as_torch(plain, x.view(5, -1)[:, ::3])


@pytest.mark.xfail(strict=True, reason="at NaN inputs torch's hardtanh_backward zeroes the gradient in its "
                   "vectorised loop and passes it in its scalar loop, which it takes when the incoming gradient "
                   "is laid out unlike the input; the bit is fixed in forward, where that layout is unknown")
def test_clamps_at_nan_inputs_under_a_gradient_laid_out_unlike_the_input():
    plain = nn.Hardtanh()
    x = clamp_input(plain, torch.float32)
    grad = torch.randn(2 * x.numel(), generator=torch.Generator().manual_seed(1))[::2]  # strided
    grads = []
    for module in (plain, as_lossless(plain)):
        leaf = x.clone().requires_grad_()
        module(leaf * 1).backward(grad)
        grads.append(leaf.grad)
    assert identical(*grads)


def test_lossless_for_maps_exact_torch_classes_to_subclasses():
    assert len(LOSSLESS_FOR) == 16
    for torch_class, saver in LOSSLESS_FOR.items():
        assert issubclass(saver, torch_class) and saver.__module__ == "xconv.lossless"
        assert torch_class.__module__.startswith("torch.nn")
    assert nn.ReLU6 in LOSSLESS_FOR and LOSSLESS_FOR[nn.ReLU6] is not LOSSLESS_FOR[nn.Hardtanh]
    assert repr(lossless.LosslessMaxPool2d(3, 2, 1)) == "Lossless" + repr(nn.MaxPool2d(3, 2, 1))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_on_fused_devices_is_torchs_native_dropout(monkeypatch, dtype, inplace):
    """On CUDA/XPU torch's out-of-place dropout is the fused native_dropout (its in-place one
    stays composite). Those devices are not available to this CPU-only suite: the saver's path
    for them, run on CPU, against native_dropout with torch's autograd."""
    monkeypatch.setattr(lossless, "_FUSED_DROPOUT_DEVICES", ("cpu",))

    class NativeDropout(nn.Dropout):  # what torch's dropout is on those devices
        def forward(self, x):
            if self.inplace:
                return super().forward(x)
            return torch.ops.aten.native_dropout(x, self.p, True)[0]

    LOSSLESS_FOR[NativeDropout] = lossless.LosslessDropout
    try:
        x = torch.randn(2, 3, 5, 4).to(dtype)
        x.view(-1)[::5] = 0.0
        assert_same_as_torch(NativeDropout(0.3, inplace), x)
    finally:
        del LOSSLESS_FOR[NativeDropout]
