"""The committed compact derivative steps (xconv.compact.STEPS) are what their construction gives."""
import pytest

from xconv.compact import STEPS
from xconv_harness.studies import compact_steps


def check(kind: str, bits: int):
    row = compact_steps.compare(kind, bits)
    assert row["committed_bound"] >= row["bound"] - 1e-12  # the stated bound is not below the minimax error
    assert row["committed_bound"] <= row["bound"] * (1 + 1e-3)  # ... and no worse (a ceiling to 4 digits)
    if row["intervals"] == row["committed_intervals"]:
        assert row["break_diff"] <= 1e-4 and row["value_diff"] <= 2e-5, row
    else:  # the minimax needs one interval fewer; the committed steps split one interval
        assert row["committed_intervals"] == row["intervals"] + 1 == 2 ** bits, row


def test_silu_two_bits_is_reproduced():
    check("silu", 2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [kind for kind in compact_steps.FUNCTIONS if kind != "silu"])
@pytest.mark.parametrize("bits", [2, 4])
def test_every_kind_is_reproduced(kind, bits):
    check(kind, bits)


def test_a_changed_constant_is_caught(monkeypatch):
    steps = STEPS[("silu", 2)]
    changed = steps._replace(values=(steps.values[0] + 1e-4, *steps.values[1:]))
    monkeypatch.setitem(STEPS, ("silu", 2), changed)
    with pytest.raises(AssertionError):
        check("silu", 2)
