"""xconv.fake_peak: the peak memory of a training step on fake tensors (torch only).

The strongest check: on CPU the fake step's peak equals, byte for byte and category by
category, the same step's peak on real tensors (MemTracker follows the same storages).
"""
import functools

import pytest
import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

import xconv
from xconv.fake_peak import FakePeak, cross_entropy, fake_peak
from xconv.memory import PeakMemory

GiB = 2**30
SGD_MOMENTUM = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)


def small_net(width: int = 16, dropout: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(), *([nn.Dropout(0.2)] if dropout else []), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 10)).train()


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_exact_peak_holds_parameters_gradients_optimizer_state_and_input():
    model = small_net()
    params = nbytes(model.parameters())
    batch = (8, 3, 32, 32)
    # "keep": gradients stay allocated all step; SGD with momentum keeps one buffer per parameter.
    peak = fake_peak(model, batch, loss_fn=cross_entropy(10), optimizer=SGD_MOMENTUM, zero_grad="keep")
    assert isinstance(peak, FakePeak) and peak.device == torch.device("cpu")
    categories = peak.by_category
    assert categories["parameters"] == params
    assert categories["gradients"] == params
    assert categories["optimizer_state"] == params
    assert categories["inputs"] == 8 * 3 * 32 * 32 * 4
    assert categories["buffers"] == nbytes(model.buffers())
    assert categories["activations"] > 0
    assert peak.total_bytes == sum(categories.values())
    assert peak.total_bytes >= 3 * params + categories["inputs"] + categories["activations"]
    assert peak.phase in ("forward", "backward", "optimizer") and peak.after_forward_bytes > 0


@pytest.mark.parametrize("probes", [0, 4])
@pytest.mark.parametrize("zero_grad", ["before_forward", "after_forward", "keep"])
def test_the_fake_step_peaks_exactly_where_the_same_real_step_does(probes, zero_grad):
    model = small_net(dropout=True)
    if probes:
        xconv.convert(model, probes=probes, relu=True)
    options = dict(loss_fn=cross_entropy(10), optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
                   zero_grad=zero_grad)
    fake = fake_peak(model, (6, 3, 24, 24), **options)
    real = fake_peak(model, (6, 3, 24, 24), fake=False, **options)
    assert fake.total_bytes == real.total_bytes
    assert fake.by_category == real.by_category
    assert (fake.phase, fake.after_forward_bytes) == (real.phase, real.after_forward_bytes)


@pytest.mark.parametrize("activations", ["lossless", "compact"])
def test_the_savers_run_under_fake_tensors_and_peak_where_the_real_step_does(activations):
    """Every saver of activations=lossless/compact runs on fake tensors (no data-dependent branch) and
    gives the real step's peak."""
    model = small_net(dropout=True)
    xconv.convert(model, probes=4, activations=activations)
    options = dict(loss_fn=cross_entropy(10), optimizer=SGD_MOMENTUM)
    fake = fake_peak(model, (6, 3, 24, 24), **options)
    real = fake_peak(model, (6, 3, 24, 24), fake=False, **options)
    assert fake.by_category == real.by_category and fake.phase == real.phase


def test_xconv_with_small_sketches_keeps_less_activation_memory_than_exact():
    model = small_net(width=32)
    exact = fake_peak(model, (64, 3, 64, 64), loss_fn=cross_entropy(10))
    xconv.convert(model, probes=4, relu=True)  # keeps 4 x C_in numbers per sample instead of C_in x 64 x 64
    sketched = fake_peak(model, (64, 3, 64, 64), loss_fn=cross_entropy(10))
    assert sketched.by_category["activations"] < 0.7 * exact.by_category["activations"]
    assert sketched.after_forward_bytes < 0.7 * exact.after_forward_bytes
    assert sketched.total_bytes < exact.total_bytes


def test_a_batch_of_many_gigabytes_allocates_nothing():
    model = small_net(width=64)
    fake_peak(model, (2, 3, 16, 16), loss_fn=cross_entropy(10), optimizer=SGD_MOMENTUM)  # imports and caches
    with PeakMemory("cpu") as rss:
        peak = fake_peak(model, (4096, 3, 128, 128), loss_fn=cross_entropy(10), optimizer=SGD_MOMENTUM)
    if rss.source == "unavailable":
        pytest.skip("no peak-RSS reading on this machine")
    assert peak.total_bytes > 16 * GiB
    assert rss.peak_bytes < 64 * 2**20, f"resident set grew by {rss.peak_bytes / 2**20:.0f} MiB"


def test_the_model_is_left_as_it_was():
    model = xconv.convert(small_net(), probes=4)
    params = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = (torch.get_rng_state(), xconv.get_rng_state())
    fake_peak(model, (4, 3, 16, 16), optimizer=SGD_MOMENTUM)
    for name, p in model.named_parameters():
        assert p is params[name][0] and torch.equal(p, params[name][1]) and p.grad is None
        assert not p._backward_hooks
    for name, b in model.named_buffers():
        assert not is_fake(b) and torch.equal(b, buffers[name])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(rng[0], torch.get_rng_state())  # torch's global stream never consumed
    assert torch.equal(rng[1], xconv.get_rng_state())  # XConv's as it was: measuring changes no later draw
    fake_peak(model, (4, 3, 16, 16), optimizer=SGD_MOMENTUM, fake=False)  # real inputs, real dropout: forked
    assert torch.equal(rng[0], torch.get_rng_state()) and torch.equal(rng[1], xconv.get_rng_state())


def test_a_factory_is_built_on_the_meta_device_and_gives_the_same_peak():
    from_module = fake_peak(small_net(), (4, 3, 16, 16), optimizer=SGD_MOMENTUM)
    built = []

    def factory():
        model = small_net()
        built.append(model)
        return model

    from_factory = fake_peak(factory, (4, 3, 16, 16), optimizer=SGD_MOMENTUM)
    assert next(built[0].parameters()).device.type == "meta"
    assert from_factory.by_category == from_module.by_category


def test_dtype_and_several_inputs_and_a_batch_callable():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, a, b):
            return self.conv(a) + self.conv(b)

    fp32 = fake_peak(TwoInputs(), [(2, 3, 8, 8), (2, 3, 8, 8)])
    bf16 = fake_peak(TwoInputs(), [(2, 3, 8, 8), (2, 3, 8, 8)], dtype=torch.bfloat16)
    assert bf16.by_category["parameters"] * 2 == fp32.by_category["parameters"]
    assert bf16.by_category["inputs"] * 2 == fp32.by_category["inputs"] == 2 * 2 * 3 * 8 * 8 * 4
    made = fake_peak(TwoInputs(), lambda: (torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)))
    assert made.by_category == fp32.by_category


def test_checkpointed_segments_run_on_fake_tensors_and_lower_the_peak():
    def deep():
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()) for _ in range(9)])

    plain = fake_peak(deep(), (8, 16, 32, 32))
    model = xconv.convert(deep(), probes=4)
    xconv.checkpoint_sequential(model, "every:3")
    checkpointed = fake_peak(model, (8, 16, 32, 32))
    assert checkpointed.after_forward_bytes < plain.after_forward_bytes / 2
    assert checkpointed.total_bytes < plain.total_bytes
    assert checkpointed.total_bytes == fake_peak(model, (8, 16, 32, 32), fake=False).total_bytes


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_xconv_layers_run_under_fake_tensor_mode(probe, transposed):
    """No data-dependent call (the call seeds are pure Python) and fake probes: the step runs,
    the weight gradient has the weight's shape, torch's global stream is untouched."""
    global_state, xconv_state = torch.get_rng_state(), xconv.get_rng_state()
    with FakeTensorMode():
        layer_cls = xconv.XConvTranspose2d if transposed else xconv.XConv2d
        model = nn.Sequential(layer_cls(3, 6, 3, padding=1, probes=5, probe=probe), xconv.BitReLU(),
                              xconv.XConv2d(6, 4, 3, probes=3, probe=probe))
        out = model(torch.randn(2, 3, 12, 12))
        out.sum().backward()
        assert is_fake(model[0].weight.grad) and model[0].weight.grad.shape == model[0].weight.shape
    assert torch.equal(torch.get_rng_state(), global_state)
    assert not torch.equal(xconv.get_rng_state(), xconv_state)  # XConv's own stream did advance


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="zero_grad must be one of before_forward, after_forward, keep"):
        fake_peak(small_net(), (2, 3, 8, 8), zero_grad="never")
    with pytest.raises(ValueError, match="inputs must be a shape"):
        fake_peak(small_net(), (2, 3, -8, 8))
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        fake_peak(small_net(), (2, 3, 8, 8), dtype=torch.int8)
    with pytest.raises(TypeError, match="model must be an nn.Module or a zero-argument factory"):
        fake_peak(3, (2, 3, 8, 8))
    with pytest.raises(ValueError, match="classes must be an integer >= 1"):
        cross_entropy(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_fake_cuda_without_a_gpu_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="needs a usable GPU: backward on fake CUDA tensors needs a CUDA context"):
        fake_peak(small_net(), (2, 3, 8, 8), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_fake_peak_matches_max_memory_allocated():
    """Fake step on cuda vs the same real step's ``torch.cuda.max_memory_allocated`` growth. Tolerance:
    5% + 8 MiB, for what MemTracker cannot see (cuDNN/cuBLAS workspaces) and the allocator's own
    blocks; cuDNN is off so that convolution workspaces do not count."""
    model = small_net(width=32)
    options = dict(loss_fn=cross_entropy(10), optimizer=SGD_MOMENTUM, device="cuda")
    with torch.backends.cudnn.flags(enabled=False):
        fake = fake_peak(model, (64, 3, 64, 64), **options)
        torch.cuda.empty_cache()
        with PeakMemory("cuda") as real:
            fake_peak(model, (64, 3, 64, 64), fake=False, **options)
    assert fake.total_bytes > 64 * 2**20
    assert abs(real.peak_bytes - fake.total_bytes) <= 0.05 * fake.total_bytes + 8 * 2**20, \
        (real.peak_bytes, fake.total_bytes)


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_probes_for_a_fake_tensor_are_fake_even_outside_its_mode(probe):
    mode = FakeTensorMode()
    with mode:
        like = torch.empty(2, 3, 5, 5)
    shape = xconv.probes.probe_shape(probe, 3, (5, 5))
    probes = xconv.probes.draw_probes(probe, 4, shape, seed=1, dtype=like.dtype, device=like.device, like=like)
    assert is_fake(probes) and probes.shape == (4, *shape)
    real = xconv.probes.draw_probes(probe, 4, shape, seed=1, dtype=torch.float32, device="cpu")
    assert not is_fake(real) and torch.equal(real, xconv.probes.draw_probes(probe, 4, shape, seed=1,
                                                                            dtype=torch.float32, device="cpu"))
