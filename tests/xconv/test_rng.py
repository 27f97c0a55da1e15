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


# The call-seed stream: counter-based, pure Python, saveable -------------------------------------------

def test_the_call_seed_stream_is_splitmix64():
    """SplitMix64's published test vector (state 1234567), and the stream built on it."""
    from xconv.rng import _GAMMA, _MASK64, _mix64

    assert [_mix64((1234567 + n * _GAMMA) & _MASK64) for n in (1, 2, 3)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423]
    xconv.manual_seed(5)
    first = [xconv.rng.next_call_seed() for _ in range(4)]
    assert all(0 <= seed < 2**62 for seed in first) and len(set(first)) == 4
    xconv.manual_seed(5)
    assert [xconv.rng.next_call_seed() for _ in range(4)] == first


def test_the_state_is_a_small_int64_tensor_that_survives_a_weights_only_checkpoint(tmp_path):
    xconv.manual_seed(11)
    xconv.rng.next_call_seed()
    state = xconv.get_rng_state()
    assert state.dtype == torch.int64 and state.tolist()[0] == xconv.rng.FORMAT_TAG and state.tolist()[2] == 1
    torch.save({"xconv": state}, tmp_path / "ckpt.pt")
    expected = [xconv.rng.next_call_seed() for _ in range(3)]
    xconv.set_rng_state(torch.load(tmp_path / "ckpt.pt", weights_only=True)["xconv"])
    assert [xconv.rng.next_call_seed() for _ in range(3)] == expected


def test_a_state_saved_before_the_counter_stream_continues_the_old_stream_exactly():
    """Checkpoints written by earlier versions hold a CPU generator's state (uint8): restoring one
    continues the seeds the old code would have drawn, and saving again keeps that format."""
    old = torch.Generator().manual_seed(7 ^ 0x5EED_C0DE_1234)  # what the old xconv.manual_seed(7) did
    xconv.set_rng_state(old.get_state())
    seeds = [xconv.rng.next_call_seed() for _ in range(3)]
    assert seeds == [int(torch.randint(2**62, (1,), generator=old).item()) for _ in range(3)]
    assert torch.equal(xconv.get_rng_state(), old.get_state())
    xconv.manual_seed(7)  # back to the counter-based stream
    assert xconv.get_rng_state().dtype == torch.int64


def test_anything_else_is_refused_with_what_was_expected():
    import pytest

    with pytest.raises(ValueError, match="not an XConv RNG state: expected an int64 tensor"):
        xconv.set_rng_state(torch.zeros(3))
    with pytest.raises(ValueError, match="not an XConv RNG state"):
        xconv.set_rng_state(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="must be a tensor from xconv.get_rng_state"):
        xconv.set_rng_state([xconv.rng.FORMAT_TAG, 1, 2])


def test_seeds_and_states_need_no_tensor_data_under_fake_tensor_mode():
    """A call seed, get_rng_state and set_rng_state under FakeTensorMode: no data-dependent error,
    real state tensors, the same seeds as outside."""
    from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

    xconv.manual_seed(3)
    outside = [xconv.rng.next_call_seed() for _ in range(2)]
    xconv.manual_seed(3)
    with FakeTensorMode():
        state = xconv.get_rng_state()
        inside = [xconv.rng.next_call_seed() for _ in range(2)]
        xconv.set_rng_state(state)
        again = xconv.rng.next_call_seed()
    assert not is_fake(state) and inside == outside and again == outside[0]
