"""Compact savers (xconv.compact): torch's forward bit for bit, less kept, a stated backward error.

* forward output and running statistics ``torch.equal`` to torch's module, every class, float32,
  float64, bfloat16 (mixed with float32 parameters, and all bfloat16), train and eval;
* kept bytes (``kept_bytes`` walk and ``saved_bytes`` hooks) a fraction of torch's, never more;
* norms: gradients within deterministic bounds derived from the quantization step ``D`` of each
  group (``|dweight - exact| <= sum |g| D``; for ``dx`` see :func:`input_grad_bound`), the bias
  gradient exact; unbiased weight and input gradients over 256 seeds (``stats.assert_unbiased``),
  and the same statistic rejecting round-to-nearest and a 1.1x scale; the documented bias of the
  product term ``x_hat * mean(gw * x_hat)`` measured where it is deterministic;
* activations: ``|kept derivative - torch's derivative| <= bound`` on dense grids (float64,
  float32, every finite bfloat16 and float16 value), the bound attained within 1%, and no
  ``2**bits``-piece constant approximation doing better than 0.99 x bound (a greedy certificate);
* torch's global random stream is untouched, and ``torch.manual_seed`` makes the rounding
  reproducible;
* working memory (fake steps, :func:`xconv.memory.fake_peak`): beyond the output and input gradients,
  backward temporaries of at most 1/8 of the input's bytes (blocks); results independent of the
  block size and of the input's memory layout; no fake constants cached by a fake step.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn

import xconv
from xconv import compact
from xconv.memory import fake_peak, kept_bytes, saved_bytes

from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)
from stats import assert_unbiased, bias_statistic
from tiny_models import Double

# (name, constructor, input shape): groups of more than 12 elements, so that 8-bit codes plus three
# float32 numbers per group are fewer bytes than a bfloat16 input and the compact path runs
NORMS = [
    ("bn1d-2d", lambda: nn.BatchNorm1d(5), (32, 5)),
    ("bn1d-3d", lambda: nn.BatchNorm1d(5, momentum=None), (6, 5, 7)),
    ("bn2d", lambda: nn.BatchNorm2d(5), (4, 5, 6, 6)),
    ("bn3d", lambda: nn.BatchNorm3d(5), (3, 5, 3, 4, 4)),
    ("gn", lambda: nn.GroupNorm(2, 6), (3, 6, 5, 5)),
    ("gn-plain", lambda: nn.GroupNorm(3, 6, affine=False), (3, 6, 10)),
    ("in1d", lambda: nn.InstanceNorm1d(5, affine=True, track_running_stats=True), (3, 5, 16)),
    ("in1d-unbatched", lambda: nn.InstanceNorm1d(5, affine=True, track_running_stats=True), (5, 16)),
    ("in2d", lambda: nn.InstanceNorm2d(5), (3, 5, 6, 6)),
    ("in3d", lambda: nn.InstanceNorm3d(4, affine=True), (2, 4, 3, 3, 3)),
    ("ln", lambda: nn.LayerNorm([6, 6]), (4, 5, 6, 6)),
    ("ln-nobias", lambda: nn.LayerNorm(16, bias=False), (3, 4, 16)),
    ("ln-plain", lambda: nn.LayerNorm(16, elementwise_affine=False), (3, 4, 16)),
]
ACTIVATIONS = [
    ("silu", lambda: nn.SiLU()), ("silu-inplace", lambda: nn.SiLU(inplace=True)),
    ("gelu", lambda: nn.GELU()), ("gelu-tanh", lambda: nn.GELU(approximate="tanh")),
    ("hardswish", lambda: nn.Hardswish()), ("hardswish-inplace", lambda: nn.Hardswish(inplace=True)),
    ("mish", lambda: nn.Mish()), ("mish-inplace", lambda: nn.Mish(inplace=True)),
    ("sigmoid", lambda: nn.Sigmoid()), ("tanh", lambda: nn.Tanh()),
]
KINDS = ["silu", "gelu", "gelu_tanh", "hardswish", "mish", "sigmoid", "tanh"]
# (input dtype, parameter dtype): bfloat16 both mixed (float32 parameters) and all bfloat16
DTYPES = {"float32": (torch.float32, torch.float32), "float64": (torch.float64, torch.float64),
          "bf16-mixed": (torch.bfloat16, torch.float32), "bf16": (torch.bfloat16, torch.bfloat16)}


def compact_copy(plain: nn.Module, bits=None) -> nn.Module:
    """A deep copy of ``plain`` converted in place, as users convert: ``__class__`` swapped."""
    module = copy.deepcopy(plain)
    module.__class__ = compact.COMPACT_FOR[type(plain)]
    if bits is not None:
        module.bits = bits
    return module


def randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial affine parameters and running statistics (so eval mode uses them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
                tensor.copy_(0.5 + noise if "var" in name or name == "weight" else noise - 0.5)
    return module


def norm_input(shape, dtype, seed=2):
    generator = torch.Generator().manual_seed(seed)
    return (1.5 * torch.randn(shape, generator=generator, dtype=torch.float64) + 0.3).to(dtype)


def run(module, x, grad=None):
    """Output, input gradient and parameter gradients of one forward + backward."""
    leaf = x.clone().requires_grad_()
    module.zero_grad()
    out = module(leaf * 1)  # a non-leaf input, as inside a network (in-place activations need one)
    if grad is None:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    out.backward(grad)
    params = {name: p.grad for name, p in module.named_parameters()}
    return out.detach(), leaf.grad, params, grad


# Forward: bit-identical output and running statistics ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make,shape", NORMS, ids=[n for n, _, _ in NORMS])
def test_norm_forward_and_running_stats_are_torchs(name, make, shape, dtype):
    x_dtype, p_dtype = DTYPES[dtype]
    plain = randomize(make()).to(p_dtype)
    comp = compact_copy(plain)
    for training, steps in ((True, 2), (False, 1)):
        plain.train(training), comp.train(training)
        for step in range(steps):
            x = norm_input(shape, x_dtype, seed=10 + step).requires_grad_()
            expected, out = plain(x), comp(x)
            assert type(out.grad_fn).__name__ == "_CompactNormFunctionBackward"
            assert out.dtype == expected.dtype and torch.equal(out, expected)
            for (key, a), (_, b) in zip(plain.named_buffers(), comp.named_buffers()):
                assert torch.equal(a, b), key


@pytest.mark.parametrize("dtype", ["float32", "float64", "bf16"])
@pytest.mark.parametrize("name,make", ACTIVATIONS, ids=[n for n, _ in ACTIVATIONS])
def test_activation_forward_is_torchs(name, make, dtype):
    plain = make()
    comp = compact_copy(plain)
    x = (3 * torch.randn(4, 3, 7, 5)).to(DTYPES[dtype][0])
    x[0, 0, 0, :5] = torch.tensor([-3.0, 3.0, 0.0, -1e4, 1e4])
    leaf_a, leaf_b = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, out = plain(leaf_a * 1), comp(leaf_b * 1)
    assert type(out.grad_fn).__name__ == "_StepDerivativeFunctionBackward"
    assert out.dtype == expected.dtype and torch.equal(out, expected)


def test_without_a_graph_the_modules_are_their_parents():
    bn = compact_copy(nn.BatchNorm2d(3))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert bn(x.requires_grad_()).grad_fn is None
    bn.weight.requires_grad_(False), bn.bias.requires_grad_(False)
    assert bn(torch.randn(2, 3, 4, 4)).grad_fn is None
    silu = compact_copy(nn.SiLU())
    assert silu(torch.randn(3)).grad_fn is None


# Memory --------------------------------------------------------------------------------------------

def kept_and_saved(module, x):
    out = module(x.clone().requires_grad_())
    return kept_bytes(out), saved_bytes(module, x.clone().requires_grad_()).total_bytes


MEMORY = [("bn2d", lambda: nn.BatchNorm2d(16), 16), ("gn", lambda: nn.GroupNorm(4, 16), 8 * 4),
          ("in2d", lambda: nn.InstanceNorm2d(16), 8 * 16), ("ln", lambda: nn.LayerNorm([14, 14]), 8 * 16)]


@pytest.mark.parametrize("bits,most", [(8, 1 / 3.5), (16, 1 / 1.9)])
@pytest.mark.parametrize("name,make,groups", MEMORY, ids=[m[0] for m in MEMORY])
def test_norms_keep_a_quarter_or_half_of_torchs_bytes(name, make, groups, bits, most):
    """Kept: the codes (bits / 8 bytes per element) and lo, D, rstd per group (float32); the weight
    is a Parameter, not counted. Torch keeps the input (4 bytes per element) and its statistics."""
    plain = make()
    x = norm_input((8, 16, 14, 14), torch.float32)
    torch_kept, torch_saved = kept_and_saved(plain, x)
    kept, saved = kept_and_saved(compact_copy(plain, bits), x)
    assert kept == saved == x.numel() * bits // 8 + 3 * 4 * groups
    assert torch_kept == torch_saved >= 4 * x.numel()
    assert kept <= most * torch_kept, (kept, torch_kept)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("name,make", ACTIVATIONS, ids=[n for n, _ in ACTIVATIONS])
def test_activations_keep_bits_per_element(name, make, bits):
    plain = make()
    plain.inplace = False  # an in-place module cannot run on the leaf kept_and_saved passes it
    x = torch.randn(8, 16, 8, 8)
    torch_kept, _ = kept_and_saved(plain, x)
    kept, saved = kept_and_saved(compact_copy(plain, bits), x)
    assert torch_kept == 4 * x.numel() and kept == saved == x.numel() * bits // 8


def test_never_more_than_torch():
    """16 bits of a bfloat16 input, or groups of one element, would not be fewer bytes: the module
    is then its parent (torch's own saver). Frozen eval-mode BN keeps rstd only (C numbers)."""
    x = norm_input((4, 6, 5, 5), torch.bfloat16)
    plain = nn.GroupNorm(2, 6)
    assert kept_and_saved(compact_copy(plain, 16), x) == kept_and_saved(plain, x)
    assert kept_and_saved(compact_copy(plain, 8), x)[0] < kept_and_saved(plain, x)[0]
    tiny = nn.LayerNorm(1)
    assert kept_and_saved(compact_copy(tiny), torch.randn(64, 1)) == kept_and_saved(tiny, torch.randn(64, 1))
    frozen = compact_copy(nn.BatchNorm2d(6)).eval().requires_grad_(False)
    assert kept_and_saved(frozen, torch.randn(4, 6, 5, 5)) == (6 * 4, 6 * 4)
    bias_only = compact_copy(nn.BatchNorm2d(6))
    bias_only.weight.requires_grad_(False)
    out = bias_only(torch.randn(4, 6, 5, 5))
    assert type(out.grad_fn).__name__ == "_CompactNormFunctionBackward" and kept_bytes(out) == 0


# Working memory: blocks ------------------------------------------------------------------------------

# kept bytes per input byte (float32): 8-bit codes for the norms, 4-bit codes for the activation
WORKING = [("bn2d", lambda: nn.BatchNorm2d(64), 1 / 4), ("ln", lambda: nn.LayerNorm([128, 128]), 1 / 4),
           ("silu", lambda: nn.SiLU(), 1 / 8)]
WORKING_SHAPE = (16, 64, 128, 128)  # 2**24 elements: blocks of 2**20 (numel / 16); fake, nothing allocated


@pytest.mark.parametrize("name,make,kept", WORKING, ids=[w[0] for w in WORKING])
def test_working_memory_is_a_few_blocks(name, make, kept):
    """Fake steps (:func:`xconv.memory.fake_peak`) on a float32 input of 64 MiB. Backward with a dense
    output gradient: the peak is there, and its temporaries are the output gradient and the input
    gradient (one input's bytes each) plus at most 1/8 of the input's bytes (the unchunked backward:
    6x for the norms, 3.25x for SiLU). A lone module (forward and backward): input, output or input
    gradient, the kept codes, and at most 1/4 of the input's bytes more (unchunked: 5x, 4.4x)."""
    input_bytes = 4 * math.prod(WORKING_SHAPE)

    def leaf():
        return torch.randn(WORKING_SHAPE, requires_grad=True)

    dense = fake_peak(nn.Sequential(compact_copy(make()), Double()), leaf, device="cpu")
    assert dense.phase == "backward"
    assert dense.by_category["temporaries"] <= (2 + 1 / 8) * input_bytes, dense
    lone = fake_peak(nn.Sequential(compact_copy(make())), leaf, device="cpu")
    assert lone.total_bytes <= (2 + kept + 1 / 4) * input_bytes, lone


def test_a_fake_step_leaves_no_fake_constants_behind(monkeypatch):
    """The activations' cached breakpoints and constants, first made under fake_peak's FakeTensorMode,
    are not cached there: a later real step still has their values."""
    monkeypatch.setattr(compact, "_STEP_TENSORS", {})
    fake_peak(nn.Sequential(compact.CompactSiLU()), lambda: torch.randn(4, 5, requires_grad=True), device="cpu")
    assert not compact._STEP_TENSORS
    x = torch.linspace(-4, 4, 20)
    kept, bound = compact_derivative("silu", 4, x)
    assert (kept - torch_derivative("silu", x)).abs().max() <= bound


def blocks_of(monkeypatch, size):
    """Blocks of at most ``size`` elements (rounded up to a multiple of 8) whatever the tensor's size."""
    monkeypatch.setattr(compact, "_MIN_BLOCK", size)
    monkeypatch.setattr(compact, "_BLOCKS", 2 ** 62)


@pytest.mark.parametrize("size", [8, 40])
@pytest.mark.parametrize("name,make,shape", NORMS, ids=[n for n, _, _ in NORMS])
def test_norm_results_do_not_depend_on_the_blocks(name, make, shape, size, monkeypatch):
    """Many small blocks (cutting groups, rows, channels) against one block: the same output, the same
    codes (the noise is drawn block after block from one generator: on CPU the draws of one call), so
    float64 gradients equal up to the summation order; also for a channels-last input."""
    plain = randomize(make()).double()
    x = norm_input(shape, torch.float64)
    layouts = [x] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])
    for training in (True, False):
        plain.train(training)
        for variant in layouts:
            results = []
            for blocked in (False, True):
                if blocked:
                    blocks_of(monkeypatch, size)
                xconv.manual_seed(3)
                results.append(run(compact_copy(plain), variant))
                monkeypatch.undo()
            (out, dx, params, _), (out_blocked, dx_blocked, params_blocked, _) = results
            assert torch.equal(out_blocked, out)
            torch.testing.assert_close(dx_blocked, dx, rtol=1e-12, atol=1e-14)
            for key, grad in params.items():
                torch.testing.assert_close(params_blocked[key], grad, rtol=1e-12, atol=1e-14)


BLOCK_ACTIVATIONS = ACTIVATIONS[:2] + ACTIVATIONS[-2:]  # SiLU (and in place), Sigmoid, Tanh


@pytest.mark.parametrize("dtype", ["float32", "bf16"])
@pytest.mark.parametrize("name,make", BLOCK_ACTIVATIONS, ids=[n for n, _ in BLOCK_ACTIVATIONS])
def test_activation_results_do_not_depend_on_the_blocks_or_the_layout(name, make, dtype, monkeypatch):
    """Blocks of 8 elements (odd sizes, a last partial byte), a channels-last input and a strided
    (non-dense) one give the gradient of one block, bit for bit."""
    x = (3 * torch.randn(3, 5, 7, 9)).to(DTYPES[dtype][0])
    expected = run(compact_copy(make()), x)
    blocks_of(monkeypatch, 8)
    for variant in (x, x.contiguous(memory_format=torch.channels_last)):
        out, dx, _, _ = run(compact_copy(make()), variant, expected[3])
        assert torch.equal(out, expected[0]) and torch.equal(dx, expected[1])
    wide = torch.zeros(3, 5, 7, 18, dtype=x.dtype)
    wide[..., ::2] = x
    wide.requires_grad_()
    strided = (wide * 1)[..., ::2]  # every other element: no memory order makes it contiguous
    compact_copy(make())(strided).backward(expected[3])
    assert torch.equal(wide.grad[..., ::2], expected[1])


# Norm gradients: deterministic bounds from the quantization step -------------------------------------

def groups(module, shape):
    """``(view shape (A, G, K, L), stat dims, weight view shape)`` of the module's normalization groups,
    written out independently of xconv.compact."""
    if isinstance(module, nn.LayerNorm):
        size = math.prod(module.normalized_shape)
        return (1, math.prod(shape) // size, size, 1), (2, 3), (1, 1, size, 1)
    if isinstance(module, nn.GroupNorm):
        n, c, g = shape[0], shape[1], module.num_groups
        return (n, g, c // g, math.prod(shape[2:])), (2, 3), (1, g, c // g, 1)
    instance = isinstance(module, nn.modules.instancenorm._InstanceNorm)
    batched = not instance or len(shape) == module._get_no_batch_dim() + 1
    n, c = shape[:2] if batched else (1, shape[0])
    view = (n, c, 1, math.prod(shape[2 if batched else 1:]))
    stat_dims = (0, 2, 3) if isinstance(module, nn.modules.batchnorm._BatchNorm) else (2, 3)
    return view, stat_dims, (1, c, 1, 1)


def reference(module, x, grad, bits):
    """Exact ``x_hat``, ``rstd``, the step ``D`` of every element's group, ``g * w`` and whether batch
    statistics are used, all float64, in the 4-d group view."""
    view, dims, weight_view = groups(module, tuple(x.shape))
    x4, g4 = x.double().reshape(view), grad.double().reshape(view)
    running = isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None and (
        not module.training)
    if running:
        mean, var = (module.running_mean.double().view(1, -1, 1, 1), module.running_var.double().view(1, -1, 1, 1))
    else:
        var, mean = torch.var_mean(x4, dim=dims, correction=0, keepdim=True)
    rstd = (var + module.eps).rsqrt()
    x_hat = (x4 - mean) * rstd
    step = (x_hat.amax(dims, keepdim=True) - x_hat.amin(dims, keepdim=True)) / (2 ** bits - 1)
    weight = getattr(module, "weight", None)
    gw = g4 if weight is None else g4 * weight.double().reshape(weight_view)
    return dict(x_hat=x_hat, rstd=rstd, step=step, g=g4, gw=gw, dims=dims, running=running,
                weight_dims=tuple(d for d in range(4) if weight_view[d] == 1))


def input_grad_bound(ref):
    """``|dx_i - exact_i| = rstd |(q_i - x_hat_i) S_q + x_hat_i (S_q - S_x)|`` with ``S = mean(gw * .)``,
    ``|q - x_hat| < D``, ``|S_q - S_x| <= D mean|gw|``, ``|S_q| <= |S_x| + D mean|gw|``."""
    dims, step = ref["dims"], ref["step"]
    mean_abs = ref["gw"].abs().mean(dims, keepdim=True)
    s_x = (ref["gw"] * ref["x_hat"]).mean(dims, keepdim=True).abs()
    return ref["rstd"] * step * (s_x + step * mean_abs + ref["x_hat"].abs() * mean_abs)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name,make,shape", NORMS, ids=[n for n, _, _ in NORMS])
def test_norm_gradients_are_within_the_quantization_bounds(name, make, shape, training, dtype, bits):
    x_dtype = DTYPES[dtype][0]
    plain = randomize(make()).to(x_dtype).train(training)
    comp = compact_copy(plain, bits)
    x = norm_input(shape, x_dtype)
    _, dx_exact, params_exact, grad = run(plain, x)
    _, dx, params, _ = run(comp, x, grad)
    ref = reference(plain, x, grad, bits)
    slack = 1e-12 if dtype == "float64" else 2e-6  # float rounding of two computations of the same thing
    view, weight_dims = ref["x_hat"].shape, ref["weight_dims"]
    dx_bound = (ref["gw"] * ref["rstd"]).abs() * slack if ref["running"] else input_grad_bound(ref)
    error = (dx - dx_exact).double().reshape(view).abs()
    assert (error <= dx_bound * (1 + 1e-6) + slack * dx_exact.abs().max()).all()
    if "weight" in params:
        weight_bound = (ref["g"].abs() * ref["step"]).sum(weight_dims).reshape(plain.weight.shape)
        error = (params["weight"] - params_exact["weight"]).double().abs()
        assert (error <= weight_bound * (1 + 1e-6) + slack * params_exact["weight"].abs().max()).all()
        assert not torch.equal(params["weight"], params_exact["weight"])  # it is an approximation
    if "bias" in params:
        summed = ref["g"].abs().sum(weight_dims).reshape(plain.bias.shape)  # summation order only
        assert ((params["bias"] - params_exact["bias"]).double().abs() <= slack * summed).all()


BF16_NORMS = [NORMS[2], NORMS[4], NORMS[6], NORMS[10]]


@pytest.mark.parametrize("dtype", ["bf16-mixed", "bf16"])
@pytest.mark.parametrize("name,make,shape", BF16_NORMS, ids=[n[0] for n in BF16_NORMS])
def test_bfloat16_norm_gradients_are_within_the_bounds_plus_one_rounding(name, make, shape, dtype):
    """bfloat16 input (float32 or bfloat16 parameters): statistics and backward in float32 as torch's
    CPU kernels do, so against the float64 gradient of the same values the error is the quantization
    bound plus one bfloat16 rounding of the result (computing in bfloat16 fails this). Torch's own
    all-bfloat16 backward is not the reference: it is up to ~90 roundings off the float64 one."""
    x_dtype, p_dtype = DTYPES[dtype]
    plain = randomize(make()).to(p_dtype)
    x = norm_input(shape, x_dtype)
    _, dx, params, grad = run(compact_copy(plain), x)
    exact = copy.deepcopy(plain).double()
    _, dx_exact, params_exact, _ = run(exact, x.double(), grad.double())
    ref = reference(exact, x.double(), grad.double(), 8)
    error = (dx.double() - dx_exact).abs().reshape(ref["x_hat"].shape)
    assert (error <= input_grad_bound(ref) + 2 ** -8 * dx_exact.abs().reshape(error.shape)).all()
    weight_bound = (ref["g"].abs() * ref["step"]).sum(ref["weight_dims"]).reshape(plain.weight.shape)
    error = (params["weight"].double() - params_exact["weight"]).abs()
    assert (error <= weight_bound + 2 ** -8 * params_exact["weight"].abs()).all()
    assert dx.dtype == x_dtype and params["weight"].dtype == params["bias"].dtype == p_dtype


# Norm gradients: unbiasedness, the tests' power, the product term's bias -----------------------------

UNBIASED = [("bn2d", lambda: nn.BatchNorm2d(3), (4, 3, 3, 3), True),
            ("bn2d-eval", lambda: nn.BatchNorm2d(3), (4, 3, 3, 3), False),
            ("gn", lambda: nn.GroupNorm(2, 4), (3, 4, 3, 3), True),
            ("in1d", lambda: nn.InstanceNorm1d(3, affine=True), (4, 3, 8), True),
            ("ln", lambda: nn.LayerNorm(12), (2, 5, 12), True)]
ESTIMATES = 256


def estimates(make, shape, training, noise=None, monkeypatch=None):
    """Exact float64 gradients and ESTIMATES compact ones (one xconv seed each, fixed start)."""
    plain = randomize(make()).double().train(training)
    comp = compact_copy(plain)
    x = norm_input(shape, torch.float64)
    _, dx_exact, params_exact, grad = run(plain, x)
    if noise is not None:
        monkeypatch.setattr(compact, "_noise_levels", noise)
    xconv.manual_seed(0)
    samples = [run(comp, x, grad) for _ in range(ESTIMATES)]
    dx = torch.stack([s[1] for s in samples])
    weight = torch.stack([s[2]["weight"] for s in samples])
    return (dx_exact, params_exact["weight"]), (dx, weight)


@pytest.mark.parametrize("name,make,shape,training", UNBIASED, ids=[u[0] for u in UNBIASED])
def test_norm_gradients_are_unbiased(name, make, shape, training):
    """Weight gradient: unbiased (linear in the rounded x_hat). Input gradient: the product term's
    bias, at most rstd |gw| D^2 / (4 M), moves no coordinate's |z| by a quarter of the threshold
    (checked; at most 1.2 of about 6), so it passes too; eval BN's input gradient has no x_hat in it."""
    exact, samples = estimates(make, shape, training)
    assert_unbiased(samples[1], exact[1])
    assert_unbiased(samples[0], exact[0])
    threshold = bias_statistic(samples[0], exact[0]).threshold
    assert samples[1].std(0).min() > 0  # the estimates do vary
    if training:
        plain = randomize(make()).double()
        x = norm_input(shape, torch.float64)
        _, _, _, grad = run(plain, x)
        ref = reference(plain, x, grad, 8)
        size = math.prod(ref["x_hat"].shape[d] for d in ref["dims"])  # M, the group's element count
        bias_bound = (ref["rstd"] * ref["gw"].abs() * ref["step"] ** 2 / (4 * size)).flatten()
        spread = samples[0].flatten(1).std(0)
        assert (ESTIMATES ** 0.5 * bias_bound / spread.clamp_min(1e-300)).max() < threshold / 4


def round_to_nearest(shape, device, noise):
    """In place of the noise levels, k = 2**15 (u = 1/2 + 2**-17): the code becomes floor(t + u),
    deterministic rounding to nearest."""
    return torch.zeros(shape, dtype=torch.int16, device=device)


BATCH_STATS = [case for case in UNBIASED if case[3]]  # eval BN's exact input gradient cannot be biased


@pytest.mark.power
@pytest.mark.parametrize("name,make,shape,training", BATCH_STATS, ids=[u[0] for u in BATCH_STATS])
def test_the_unbiasedness_test_rejects_round_to_nearest_and_a_ten_percent_scale(name, make, shape, training,
                                                                                 monkeypatch):
    exact, samples = estimates(make, shape, training)
    for index in (0, 1):
        assert bias_statistic(1.1 * samples[index], exact[index]).rejected
    exact, nearest = estimates(make, shape, training, noise=round_to_nearest, monkeypatch=monkeypatch)
    assert bias_statistic(nearest[1], exact[1]).rejected
    assert bias_statistic(nearest[0], exact[0]).rejected


def test_the_product_term_bias_is_as_documented():
    """Rows (-s, 0, 0, s), M = 4: x_hat = (-a, 0, 0, a), the middle two at t = 127.5 of 255 steps, so
    each rounds to +-D/2 at random (Var = D^2 / 4). With g = (1, 2, 0, 1), mean(g q) = q_2 / 2 and the
    second input gradient is rstd (2 - 1 - q_2^2 / 2): deterministic, off the exact rstd (2 - 1) by
    -rstd gw_2 Var / M = -rstd D^2 / 8, the documented bias, in every row. (Float64: with float32,
    8-bit codes and three numbers per group would not be fewer bytes than a group of 4.)"""
    rows = 64
    plain = nn.LayerNorm(4, elementwise_affine=False).double()
    x = torch.tensor([-0.7, 0.0, 0.0, 0.7], dtype=torch.float64).repeat(rows, 1)
    grad = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64).repeat(rows, 1)
    _, dx_exact, _, _ = run(plain, x, grad)
    out = compact_copy(plain)(x.clone().requires_grad_())
    assert type(out.grad_fn).__name__ == "_CompactNormFunctionBackward"
    _, dx, _, _ = run(compact_copy(plain), x, grad)
    var = x[0].var(correction=0)
    rstd = (var + plain.eps).rsqrt()
    step = 2 * 0.7 * rstd / 255
    predicted = -rstd * step ** 2 / 8
    torch.testing.assert_close(dx[:, 1] - dx_exact[:, 1], predicted.expand(rows), rtol=1e-6, atol=0)
    assert (dx[:, 2] - dx_exact[:, 2]).abs().max() > 0  # the others are noisy, not biased
    # relative to the rstd * gw_2 term: Var / M = D^2 / (4 M)
    assert (predicted / (2 * rstd)).item() == pytest.approx(-(step ** 2).item() / 16, rel=1e-12)


# Randomness ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: nn.BatchNorm2d(4), lambda: nn.SiLU()], ids=["bn", "silu"])
def test_the_global_random_stream_is_untouched(make):
    x = torch.randn(2, 4, 5, 5)
    draws = []
    for module in (make(), compact_copy(make())):
        torch.manual_seed(0)
        module(x.clone().requires_grad_()).sum().backward()
        draws.append(torch.rand(3))
    assert torch.equal(*draws)


def test_torch_manual_seed_makes_the_rounding_reproducible():
    comp = compact_copy(nn.GroupNorm(2, 4))
    x = norm_input((3, 4, 5, 5), torch.float32)
    grads = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        grads.append(run(comp, x)[2]["weight"])
    assert torch.equal(grads[0], grads[1]) and not torch.equal(grads[0], grads[2])


def test_the_noise_is_uniform_on_its_levels_and_independent_of_how_it_is_cut():
    """16-bit noise levels, four per 64-bit draw: taken in pieces (leftovers carried) they are the
    same sequence, int16 ``k - 2**15``; over 2**20 levels the 256 top-byte bins, and the 256 low-byte
    bins, pass a chi-square test at p = 1e-4 (255 d.o.f.: 348.2). ``random_()`` without the full
    range gives 63 bits, and its fourth lane's zero top bit fails with a statistic of about 65000."""
    def noise():
        return compact._Noise(torch.Generator().manual_seed(11))
    whole = noise().take(2 ** 20, "cpu")
    cut = noise()
    pieces = torch.cat([cut.take(n, "cpu") for n in (1, 4, 2, 2 ** 20 - 7)])
    assert whole.dtype == torch.int16 and torch.equal(pieces, whole)
    k = whole.long() + 2 ** 15
    expected = whole.numel() / 256
    for bins in (k // 256, k % 256):
        counts = torch.bincount(bins, minlength=256).double()
        assert ((counts - expected) ** 2 / expected).sum() < 348.2


# Activations: the derivative error bound ------------------------------------------------------------

def torch_derivative(kind, x):
    function = {"silu": nn.functional.silu, "gelu": nn.functional.gelu,
                "gelu_tanh": lambda t: nn.functional.gelu(t, approximate="tanh"),
                "hardswish": nn.functional.hardswish, "mish": nn.functional.mish,
                "sigmoid": torch.sigmoid, "tanh": torch.tanh}[kind]
    leaf = x.clone().requires_grad_()
    function(leaf).backward(torch.ones_like(leaf))
    return leaf.grad


def compact_derivative(kind, bits, x):
    plain = {"silu": nn.SiLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
             "hardswish": nn.Hardswish, "mish": nn.Mish, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[kind]()
    module = compact_copy(plain, bits)
    leaf = x.clone().requires_grad_()
    module(leaf).backward(torch.ones_like(leaf))
    return leaf.grad, module.derivative_bound


def dense_grid(dtype, kind, bits):
    """Every 1e-4 on [-12, 12], a log-spaced tail to +-1e4, each breakpoint and its neighbours."""
    points = [torch.arange(-12, 12, 1e-4, dtype=torch.float64), torch.logspace(1, 4, 300, dtype=torch.float64)]
    points.append(-points[-1])
    breaks = torch.tensor(compact.STEPS[(kind, bits)].breaks + (-3.0, 3.0), dtype=torch.float64).to(dtype)
    for direction in (-math.inf, math.inf):
        points.append(torch.nextafter(breaks, torch.full_like(breaks, direction)).double())
    points.append(breaks.double())
    return torch.cat(points).to(dtype)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_activation_derivative_error_is_within_the_stated_bound_and_attains_it(kind, bits):
    x = dense_grid(torch.float64, kind, bits)
    kept, bound = compact_derivative(kind, bits, x)
    error = (kept - torch_derivative(kind, x)).abs().max().item()
    assert bound == compact.STEPS[(kind, bits)].bound
    assert 0.99 * bound <= error <= bound * (1 + 1e-12), (error, bound)
    x32 = dense_grid(torch.float32, kind, bits)
    kept, _ = compact_derivative(kind, bits, x32)
    assert (kept - torch_derivative(kind, x32)).abs().max().item() <= bound + 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_codes_are_those_of_the_real_breakpoints(dtype):
    """Every finite value of the dtype: its derivative is the constant of the interval its exact
    value lies in (breakpoints rounded up to the dtype, compared there)."""
    every = torch.arange(2 ** 16, dtype=torch.int32).to(torch.int16).view(dtype)
    every = every[every.isfinite()]
    for (kind, bits), steps in compact.STEPS.items():
        kept, _ = compact_derivative(kind, bits, every)
        code = torch.bucketize(every.double(), torch.tensor(steps.breaks, dtype=torch.float64), right=True)
        expected = torch.tensor(steps.values, dtype=torch.float64)[code].float().to(dtype)
        assert torch.equal(kept, expected), (kind, bits)


def greedy_pieces(values: torch.Tensor, error: float, limit: int) -> int:
    """Fewest intervals of consecutive ``values`` each within ``2 error`` (greedy is optimal), capped."""
    pieces, start = 1, 0
    while pieces <= limit:
        tail = values[start:]
        over = ((tail.cummax(0).values - tail.cummin(0).values) > 2 * error).nonzero()
        if over.numel() == 0:
            return pieces
        start += int(over[0])
        pieces += 1
    return pieces


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_no_piecewise_constant_derivative_does_one_percent_better(kind, bits):
    """Minimax certificate: on a grid (a subset of the real line) no partition into 2**bits intervals
    with constants has error <= 0.99 x the stated bound, so none on the real line has."""
    x = torch.cat([torch.arange(-10, 10, 2e-4, dtype=torch.float64),
                   torch.tensor([-3.0, 3.0], dtype=torch.float64)])
    values = torch_derivative(kind, x.sort().values)
    assert greedy_pieces(values, 0.99 * compact.STEPS[(kind, bits)].bound, 2 ** bits) > 2 ** bits


@pytest.mark.parametrize("dtype", ["float32", "float64", "bf16"])
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("name,make", ACTIVATIONS, ids=[n for n, _ in ACTIVATIONS])
def test_activation_gradients_are_within_bound_times_grad_out(name, make, bits, dtype):
    """Against torch's float64 gradient of the same values: ``bound * |g|`` plus one rounding of the
    result to the input dtype (relative 2**-24 in float32 and 2**-8 in bfloat16, bounded loosely)."""
    plain = make()
    comp = compact_copy(plain, bits)
    x = (3 * torch.randn(4, 3, 7, 5)).to(DTYPES[dtype][0])
    _, dx, _, grad = run(comp, x)
    _, dx_exact, _, _ = run(copy.deepcopy(plain).double(), x.double(), grad.double())
    rounding = {"float64": 1e-15, "float32": 1e-6, "bf16": 2 ** -8}[dtype]
    limit = comp.derivative_bound * grad.double().abs()
    assert ((dx.double() - dx_exact).abs() <= limit + rounding * (dx_exact.abs() + limit)).all()
    assert dx.dtype == x.dtype


# Construction --------------------------------------------------------------------------------------

def test_compact_for_maps_exact_torch_classes_to_subclasses():
    assert len(compact.COMPACT_FOR) == 14
    for plain, replacement in compact.COMPACT_FOR.items():
        assert issubclass(replacement, plain) and replacement.__module__ == "xconv.compact"


def test_constructor_bits_and_errors():
    assert compact.CompactBatchNorm2d(4).bits == 8 and compact.CompactBatchNorm2d(4, bits=16).bits == 16
    assert compact.CompactSiLU(inplace=True, bits=2).bits == 2 and compact.CompactSiLU().bits == 4
    assert "bits=16" in repr(compact.CompactLayerNorm(3, bits=16)) and "bits=4" in repr(compact.CompactTanh())
    with pytest.raises(ValueError, match=r"bits must be one of \(8, 16\).*got 4"):
        compact.CompactGroupNorm(2, 4, bits=4)
    with pytest.raises(ValueError, match=r"bits must be one of \(2, 4\).*got 8"):
        compact.CompactGELU(bits=8)
    module = compact.CompactInstanceNorm2d(3, affine=True)
    module.bits = 7
    with pytest.raises(ValueError, match="got 7"):
        module(torch.randn(2, 3, 4, 4, requires_grad=True))


def test_bad_inputs_raise_torchs_errors():
    with pytest.raises(ValueError, match="expected 4D input"):
        compact.CompactBatchNorm2d(3)(torch.randn(2, 3, 4, requires_grad=True))
    with pytest.raises(RuntimeError):
        compact.CompactLayerNorm(5)(torch.randn(2, 4, requires_grad=True))
