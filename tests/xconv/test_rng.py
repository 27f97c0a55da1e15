"""XConv's randomness: separate from torch's global stream, reproducible."""
import torch
import torch.nn as nn

import xconv


def small_model(probes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                          nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    return xconv.convert(model, probes=probes)


def train(probes, steps=3, seed=0):
    model = small_model(probes)
    torch.manual_seed(seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8)
        loss = model(x).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model, torch.get_rng_state()


def test_xconv_leaves_the_global_rng_stream_untouched():
    """Dropout masks and data draws are the same with and without XConv."""
    _, state_exact = train(probes=0)
    _, state_xconv = train(probes=4)
    assert torch.equal(state_exact, state_xconv)


def test_a_fixed_seed_makes_xconv_training_reproducible():
    first, _ = train(probes=4, seed=3)
    second, _ = train(probes=4, seed=3)
    other, _ = train(probes=4, seed=4)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))


def test_xconv_seed_alone_changes_only_the_estimate():
    """xconv.manual_seed changes the probes but not torch's stream."""
    layer = xconv.XConv2d(2, 3, 3, probes=2)
    x, grads = torch.randn(2, 2, 6, 6), []
    for seed in (1, 1, 2):
        xconv.manual_seed(seed)
        layer.zero_grad()
        layer(x).sum().backward()
        grads.append(layer.weight.grad.clone())
    assert torch.equal(grads[0], grads[1]) and not torch.equal(grads[0], grads[2])


def test_rng_state_round_trip():
    layer = xconv.XConv2d(2, 3, 3, probes=2)
    x = torch.randn(2, 2, 6, 6)
    state = xconv.get_rng_state()
    grads = []
    for _ in range(2):
        xconv.set_rng_state(state)
        layer.zero_grad()
        layer(x).sum().backward()
        grads.append(layer.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])
