"""The paper's published numbers that our tables print beside their own (source: shared/PAPER.md §2.2).

Each :class:`PaperNumbers` names the task (and model) whose tables it belongs to,
the quantity it stands beside (a metric key of the summaries, or ``peak_mib``),
the keys that pick a value (``probes`` and config keys such as
``data.batch_size``) and the values, one list per key (several entries = the
paper's repeated runs). Paper values are for exact rows and for XConv rows with
channel ("independent") probes, exact ReLUs and no checkpointing, the only mode
the paper's application experiments use.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperNumbers:
    task: str
    model: str | None
    quantity: str            # a metric key ("test/acc") or "peak_mib"
    label: str               # column header
    source: str
    keys: tuple[str, ...]    # "probes" or flattened config keys
    values: dict             # key tuple -> list of the paper's values
    digits: int | None = None  # decimals to print, when the paper's values need more than ours


_BATCHES = (32, 64, 128, 256, 512, 1024)
_TABLE1_ROWS = {  # probes -> test accuracy at batch 32, 64, 128, 256, 512, 1024 (2021 draft)
    0: (0.9922, 0.9930, 0.9936, 0.9923, 0.9918, 0.9884),
    2: (0.9656, 0.9474, 0.9610, 0.9584, 0.9472, 0.9394),
    4: (0.9676, 0.9693, 0.9723, 0.9634, 0.9579, 0.9498),
    8: (0.9762, 0.9721, 0.9728, 0.9762, 0.9627, 0.9625),
    16: (0.9817, 0.9831, 0.9824, 0.9830, 0.9790, 0.9735),
    32: (0.9818, 0.9862, 0.9847, 0.9838, 0.9815, 0.9789),
    64: (0.9874, 0.9829, 0.9877, 0.9848, 0.9819, 0.9803),
}

TABLE1_MNIST = PaperNumbers(
    task="classification", model="mnist_net", quantity="test/acc", label="paper acc (%)",
    source="paper Table 1 (MNIST, Julia/Flux, 2021 draft values)", keys=("data.batch_size", "probes"),
    values={(batch, probes): [accuracies[i]] for probes, accuracies in _TABLE1_ROWS.items()
            for i, batch in enumerate(_BATCHES)})

FIG16_MNIST_FID = PaperNumbers(
    task="generative", model=None, quantity="test/fid", label="paper FID",
    source="paper Fig. 16 (MNIST DDPM, 3 runs, its own ResNet-18 FID features: compare shapes, not values)",
    keys=("probes",),
    values={(0,): [0.045, 0.032, 0.063], (32,): [0.154, 0.111, 0.117], (64,): [0.115, 0.052, 0.066],
            (128,): [0.149, 0.074, 0.075], (256,): [0.050, 0.053, 0.072]}, digits=3)

_FIG31A = {0: (28.58, 683.127), 32: (25.27, 454.101), 64: (26.0, 453.861), 128: (26.66, 466.976),
           256: (27.31, 557.364), 512: (27.70, 739.961), 1024: (28.14, 1109.154)}

FIG31A_SR_PSNR = PaperNumbers(
    task="superres", model=None, quantity="test/best_psnr_y", label="paper PSNR (dB)",
    source="paper Fig. 31a (DIP x4 super-resolution, Set5 average, GPU)", keys=("probes",),
    values={(probes,): [psnr] for probes, (psnr, _) in _FIG31A.items()})

FIG31A_SR_PEAK = PaperNumbers(
    task="superres", model=None, quantity="peak_mib", label="paper peak (MiB)",
    source="paper Fig. 31a (torch.cuda.max_memory_allocated)", keys=("probes",),
    values={(probes,): [peak] for probes, (_, peak) in _FIG31A.items()})

ALL = (TABLE1_MNIST, FIG16_MNIST_FID, FIG31A_SR_PSNR, FIG31A_SR_PEAK)


def for_table(task: str, model: str) -> list[PaperNumbers]:
    """The paper numbers that belong beside a table of ``task`` with ``model``."""
    return [numbers for numbers in ALL if numbers.task == task and numbers.model in (None, model)]


def paper_values(numbers: PaperNumbers, row) -> list[float] | None:
    """The paper's values for a table row (a :class:`run_summaries.Row`), or None.

    Only exact rows and XConv rows with channel probes, exact ReLUs and activations and no checkpointing
    have paper counterparts.
    """
    gradient = row.gradient
    comparable = gradient.is_reference or (gradient.is_xconv and gradient.probe == "channel"
                                           and gradient.relu == "exact" and gradient.activations == "exact"
                                           and not gradient.is_checkpointed)
    if not comparable:
        return None
    config = row.runs[0].config
    key = tuple(gradient.probes if name == "probes" else config.get(name) for name in numbers.keys)
    return numbers.values.get(key)
