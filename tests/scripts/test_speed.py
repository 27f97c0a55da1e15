"""scripts/speed.py on a tiny grid: table structure (no assertion on wall-clock time)."""
import importlib
import csv
from pathlib import Path

import pytest
import torch

TINY = ["--channels", "4,8", "--sizes", "8", "--batches", "4,6", "--probes", "2,4", "--models", "MnistNet",
        "--repeats", "1", "--warmup", "0", "--min-seconds", "0"]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("xconv_harness.studies.speed")


def table(text, heading):
    """Rows (as dicts) of the first markdown table after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    block = lines[start:end]
    split = lambda line: [cell.strip() for cell in line.strip("|").split("|")]
    header = split(block[0])
    return header, [dict(zip(header, split(line))) for line in block[2:]]


def test_tiny_grid_has_a_ratio_for_every_case_and_r(script, tmp_path, capsys):
    out = tmp_path / "speed"
    layer_cases, model_cases = script.main(TINY + ["--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    for line in ["- command: `python scripts/speed.py --channels 4,8", "- date: ", "- machine: ",
                 "torch.get_num_threads()=", "- scale: median of >= 1 steps"]:
        assert line in text

    header, rows = table(text, "## One 3x3 conv layer")
    assert header == ["C", "HxW", "B", "exact ms", "ratio r=2", "ratio r=4"]
    assert sorted((row["C"], row["HxW"], row["B"]) for row in rows) == [
        ("4", "8x8", "4"), ("4", "8x8", "6"), ("8", "8x8", "4"), ("8", "8x8", "6")]
    header, models = table(text, "## Task models")
    assert header == ["model", "input", "exact ms", "ratio r=2", "ratio r=4"]
    assert [(row["model"], row["input"]) for row in models] == [("MnistNet", "128x1x28x28")]
    for row in rows + models:
        assert all(float(row[f"ratio r={r}"]) > 0 for r in (2, 4))

    long = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(long) == (4 + 1) * 2  # every case at every r
    for row in long:
        assert float(row["time_ratio"]) == pytest.approx(float(row["xconv_ms"]) / float(row["exact_ms"]), rel=1e-4)
    assert out.with_suffix(".png").stat().st_size > 5_000
    assert len(layer_cases) == 4 and len(model_cases) == 1


def test_large_cases_are_left_out_and_listed(script, capsys):
    layer_cases, _ = script.main(["--channels", "4,64", "--sizes", "8", "--batches", "4", "--probes", "2",
                                     "--models", "", "--repeats", "1", "--warmup", "0", "--min-seconds", "0",
                                     "--max-gflop", "0.01"])
    assert [case.channels for case in layer_cases] == [4]
    assert "left out (1: C=64 N=8 B=4)" in capsys.readouterr().out


def test_rounds_of_the_interleaved_timer():
    from xconv_harness.studies.timing import median_times_ms

    calls = {"a": 0, "b": 0}
    steps = {key: (lambda key=key: calls.__setitem__(key, calls[key] + 1)) for key in calls}
    median_times_ms(steps, repeats=3, warmup=2, device="cpu")
    assert calls == {"a": 5, "b": 5}
    median_times_ms(steps, repeats=3, warmup=2, device="cpu", min_seconds=1e9, max_rounds=7)
    assert calls == {"a": 5 + 9, "b": 5 + 9}  # 2 warm-up + 7 timed rounds: capped


def test_every_task_model_builds_at_its_default_input(script):
    for name, spec in script.MODEL_SPECS.items():
        config = script.task_config(*spec)
        torch.manual_seed(0)
        model = script.build_model(config["model"])
        inputs = script.model_inputs(name, config, torch.device("cpu"))
        with torch.no_grad():
            output = model.eval()(*inputs)
        assert output.shape[0] == config["data"]["batch_size"], name
    assert script.task_config(*script.MODEL_SPECS["CifarNet"])["data"]["image_size"] == 32
    assert script.task_config(*script.MODEL_SPECS["DiffusionUNet"])["model"]["block_channels"] == [16, 32, 64]
