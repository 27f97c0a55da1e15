"""The mutation script: every mutant's anchor is in today's code exactly once, and a mutant run
reports killed / survived from the copy's own tests (the checkout is never touched)."""
from __future__ import annotations

from pathlib import Path

import pytest

from xconv_harness.studies import mutants

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_every_anchor_applies_once_to_a_copy(mutant, tmp_path):
    (tmp_path / Path(mutant.file).parent).mkdir(parents=True)
    (tmp_path / mutant.file).write_text((ROOT / mutant.file).read_text())
    mutant.apply(tmp_path)
    assert (tmp_path / mutant.file).read_text() != (ROOT / mutant.file).read_text()


def test_a_stale_anchor_is_refused(tmp_path):
    (tmp_path / "xconv").mkdir()
    (tmp_path / "xconv" / "rng.py").write_text("nothing here\n")
    with pytest.raises(ValueError, match="anchor found 0 times in xconv/rng.py"):
        mutants.Mutant("stale", "xconv/rng.py", "something", "else", "a stale mutant").apply(tmp_path)


def test_killed_and_survived_in_a_copy():
    """A mutant that breaks the tested file is killed; one that changes nothing tested survives."""
    before = (ROOT / "xconv" / "activations.py").read_text()
    killed = mutants.Mutant("relu", "xconv/activations.py", "packed = pack_bits(x > 0)",
                            "packed = pack_bits(x >= 0)", "", tests=("tests/xconv/test_activations.py",))
    harmless = mutants.Mutant("doc", "xconv/activations.py", '"""ReLU and LeakyReLU', '"""The ReLU and LeakyReLU',
                              "", tests=("tests/xconv/test_activations.py",))
    assert mutants.run_mutant(killed, ROOT, timeout=300)["status"] == "killed"
    assert mutants.run_mutant(harmless, ROOT, timeout=300)["status"] == "survived"
    assert (ROOT / "xconv" / "activations.py").read_text() == before
