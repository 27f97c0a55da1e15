"""SavedTensorMeter(model): saved bytes grouped by qualified module name, in forward order."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from xconv.memory import OUTSIDE_MODULES, ROOT_MODULE, SavedTensorMeter, saved_bytes


class Block(nn.Module):
    """A container whose own forward saves a tensor (torch.sigmoid keeps its output)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return torch.sigmoid(self.relu(self.conv(x))) * 1.0


def test_bytes_by_module_name_in_forward_order():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    x = torch.randn(2, 3, 8, 8)
    with SavedTensorMeter(model) as meter:
        model(x)
    activation = 2 * 4 * 8 * 8 * 4  # bytes of one (2, 4, 8, 8) float tensor
    assert meter.bytes_by_module == {
        "0": x.numel() * 4,          # the first conv keeps x
        "1.conv": activation,         # the block's conv keeps its input (output of "0")
        "1.relu": activation,         # ReLU keeps its output
        "1": activation,              # sigmoid inside Block.forward, charged to the container
        "3": activation,              # Linear keeps its (flattened) input: a new storage after "* 1.0"
    }
    assert sum(meter.bytes_by_module.values()) == meter.total_bytes
    assert meter.call_order == [ROOT_MODULE, "0", "1", "1.conv", "1.relu", "2", "3"]
    assert meter.counted(x) and not meter.counted(torch.randn(2))


def test_reused_module_and_modules_outside_the_model():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3))
    outside = nn.Tanh()
    x = torch.randn(5, 3)
    with SavedTensorMeter(model) as meter:
        hidden = model(x)
        relu(hidden)       # the model's module called again, outside the model's forward
        outside(hidden)    # a module that is not part of the model
        F.softplus(hidden)  # no module at all
    numbers = 5 * 3 * 4
    assert meter.bytes_by_module["1"] == 2 * numbers
    assert meter.bytes_by_module[OUTSIDE_MODULES] == 2 * numbers  # Tanh output + softplus input
    assert meter.bytes_by_kind["Tanh"] == numbers
    assert meter.call_order == [ROOT_MODULE, "0", "1", "2"]


def test_without_a_model_only_kinds_are_grouped():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with SavedTensorMeter() as meter:
        model(torch.randn(2, 3))
    assert meter.bytes_by_module == {} and meter.call_order == []
    assert set(meter.bytes_by_kind) == {"Linear", "ReLU"}
    assert saved_bytes(model, torch.randn(2, 3)).bytes_by_module.keys() == {"0", "1"}


def test_metered_graph_is_freed_without_backward_and_gradients_are_unchanged():
    """The meter must not keep saved outputs alive (a saved output holding its own grad_fn is a
    reference cycle no garbage collection frees, pytorch/pytorch#115255)."""
    import gc
    import weakref

    x = torch.randn(4, 3, requires_grad=True)
    with SavedTensorMeter():
        hidden = torch.relu(x @ torch.randn(3, 3))  # relu saves its output
    alive = weakref.ref(hidden)
    del hidden
    gc.collect()
    assert alive() is None

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Sigmoid())
    inputs = torch.randn(2, 3, 9, 9, requires_grad=True)
    plain = torch.autograd.grad(model(inputs).sum(), [inputs, *model.parameters()])
    with SavedTensorMeter(model):
        metered = model(inputs).sum()
    for a, b in zip(plain, torch.autograd.grad(metered, [inputs, *model.parameters()])):
        torch.testing.assert_close(a, b)
