"""scripts/make_tables.py on summaries written here (a fake multirun), and on the committed runs.

The fixture runs are made-up numbers in the harness's summary.json / metrics.csv layout, so the
expected cells (means, sample stds, ratios) are computed by hand below.
"""
import importlib
import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the checkout: results/ is committed there
MIB = 2 ** 20
# The task classes the runs name: a table shows the metrics, curve and baseline the class declares.
TARGETS = {"classification": "xconv_harness.classification.ClassificationTask",
           "superres": "xconv_harness.dip.SuperResolutionTask"}


@pytest.fixture(scope="module")
def make_tables():
    return importlib.import_module("xconv_harness.studies.make_tables")


def gradient(probes, relu="exact", checkpoint=None, probe="channel"):
    mode = "+".join(["xconv"] * (probes > 0) + ["checkpoint"] * (checkpoint not in (None, "none"))) or "exact"
    entry = {"mode": mode, "probes": probes, "probe": probe, "relu": relu, "xconv_layers": []}
    if checkpoint is not None:  # summaries written before checkpointing existed have no such field
        entry["checkpoint"] = checkpoint
    if checkpoint == "sqrt":  # the harness records the largest segment recomputation of the plan
        entry["checkpoint_plan"] = {"mode": "sqrt", "recompute_bytes": MIB}
    return entry


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_run(folder: Path, *, command, task, gradient_, seed, batch, metrics, saved, peak, step,
              date, curve=None, picture=None, extra_config=None, code=None):
    folder.mkdir(parents=True)
    config = {"probes": gradient_["probes"], "probe": gradient_["probe"], "relu": gradient_["relu"],
              "seed": seed, "out_dir": str(folder), "threads": 1,
              "task": {"name": task, "_target_": TARGETS[task], "seed": seed},
              "data": {"name": "fake", "batch_size": batch, "train_subset": 100},
              "trainer": {"max_epochs": 1, "enable_progress_bar": False}, **(extra_config or {})}
    summary = {"task": task, "data": "fake", "model": "fake_net", "gradient": gradient_, "seed": seed,
               "metrics": metrics,
               "activation_memory": {"saved_bytes": saved, "saved_bytes_by_kind": {}, "measured_on_step": 2},
               "peak_memory": {"bytes": 987654321, "source": "cpu_peak_rss_growth"},  # allocator noise: never shown
               **({"fake_peak": {"bytes": peak, "source": "fake_tensor_mem_tracker"}} if peak is not None else {}),
               "time": {"median_step_s": step, "steps_timed": 5, "batch_size": batch, "samples_per_s": 1.0},
               "train_steps": 10, "wall_time_s": 30.0, "device": "cpu", "machine": "Test CPU, 2 logical CPUs",
               "date": date, "versions": {"torch": "9.9", "xconv": "0.1.0"}, "command": command,
               "code": code or {"source": "git", "commit": COMMIT, "clean": True}, "config": config}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    if curve is not None:
        (folder / "csv").mkdir()
        lines = ["epoch,step,train/loss,val/acc"] + [f"0,{step_},{loss},{'' if acc is None else acc}"
                                                     for step_, loss, acc in curve]
        (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    if picture is not None:
        (folder / "images").mkdir()
        shutil.copyfile(picture, folder / "images" / "test_images_step10.png")
        shutil.copyfile(picture, folder / "images" / "val_images_step5.png")


CLASSIFY = ("python -m xconv.run -m experiment=fake_table probes=0,4 relu=exact,bit "
            "data.batch_size=8,16 seed=0,1")
ACCURACY = {  # (probes, relu, checkpoint, batch) -> accuracy per seed
    (0, "exact", None, 8): [0.80, 0.90], (4, "exact", None, 8): [0.70, 0.74],
    (4, "bit", None, 8): [0.72, 0.72], (0, "exact", "sqrt", 8): [0.81, 0.89], (0, "bit", None, 8): [0.80, 0.90],
    (0, "exact", None, 16): [0.60, 0.64], (4, "exact", None, 16): [0.50, 0.52],
}


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    """A fake multirun: classification at two batch sizes x modes x 2 seeds, plus a superres table."""
    root = tmp_path_factory.mktemp("multirun")
    job = 0
    for (probes, relu, checkpoint, batch), accuracies in ACCURACY.items():
        for seed, accuracy in enumerate(accuracies):
            saved = batch * MIB // (4 if probes else 1)
            write_run(root / "sweep" / f"{job}_classification_probes{probes}_seed{seed}",
                      command=CLASSIFY, task="classification",
                      gradient_=gradient(probes, relu, checkpoint if checkpoint else ("none" if job % 2 else None)),
                      seed=seed, batch=batch, metrics={"test/acc": accuracy, "val/acc": accuracy},
                      saved=saved, peak=2 * saved, step=0.01 * (2 if probes else 1),
                      date=f"2026-01-01T00:{job:02d}:00+00:00",
                      curve=[(0, 2.0 + seed, None), (9, 1.0 + seed, accuracy)])
            job += 1
    picture = root / "picture.png"
    import matplotlib.image

    matplotlib.image.imsave(str(picture), [[[0.1, 0.5, 0.9]] * 4] * 4)
    for job, probes in enumerate((0, 16, 1024)):
        write_run(root / "sr" / f"{job}_superres_probes{probes}_seed0",
                  command="python -m xconv.run -m experiment=fake_sr probes=0,16,1024", task="superres",
                  gradient_=gradient(probes), seed=0, batch=1,
                  metrics={"test/best_psnr_y": 20.0 + probes / 1024, "test/psnr_y": 19.0,
                           "test/bicubic_psnr_y": 18.5, "val/best_step": {16: 7, 1024: 9}.get(probes, 10)},  # 9 = the last step's output
                  saved=2 * MIB if probes else 8 * MIB, peak=16 * MIB if probes else 20 * MIB, step=0.1,
                  date=f"2026-01-02T00:0{job}:00+00:00", picture=picture)
    return root


def table_rows(text: str, header_start: str):
    """The rows of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]
    header = split(lines[start])
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, split(line))))
    return header, rows


@pytest.fixture(scope="module")
def written(make_tables, fake_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    timing = tmp_path_factory.mktemp("timing") / "table_timing.csv"  # as scripts/table_timing.py writes it
    timing.write_text("table,settings,mode,median_step_ms,ratio_vs_exact,repeats,batch_shape\n"
                      "fake_sr,,exact,10.0,1.0,5,1x3x8x8\nfake_sr,,XConv r=16 channel,12.3,1.23,5,1x3x8x8\n"
                      "fake_table,batch_size=8,exact,4.0,1.0,5,8x1x28x28\n"
                      "fake_table,batch_size=8,XConv r=4 channel,6.0,1.5,5,8x1x28x28\n")
    paths = make_tables.main([str(fake_runs), "--out", str(out), "--headline", "--timing", str(timing)])
    return out, paths, timing


def test_files_per_table(written):
    out, paths, _ = written
    names = sorted(path.name for path in paths)
    assert names == sorted([
        "fake_table.md", "fake_table.csv", "fake_table_metric.png", "fake_table_memory.png",
        "fake_table_tradeoff.png", "fake_table_curves.png",
        "fake_sr.md", "fake_sr.csv", "fake_sr_metric.png", "fake_sr_memory.png", "fake_sr_tradeoff.png",
        "fake_sr_images.png", "headline.md", "headline.csv"])
    assert all(path.parent == out and path.stat().st_size > 0 for path in paths)


def test_provenance_comes_from_the_summaries(written):
    text = (written[0] / "fake_table.md").read_text()
    assert text.startswith("# fake_table: classification, fake_net on fake\n")
    assert f"  - `{CLASSIFY}`" in text
    assert "- dates: 2026-01-01T00:00:00+00:00 to 2026-01-01T00:13:00+00:00 (UTC, from the run summaries)" in text
    assert "- machine: Test CPU, 2 logical CPUs" in text
    assert "- software: torch 9.9, xconv 0.1.0" in text
    assert "- scale: 14 runs; seeds 0, 1; data.name=fake; data.train_subset=100; data.batch_size in {8, 16}" in text
    assert "total wall time of the runs 7.0 min" in text
    assert "peak memory = fake_tensor_mem_tracker: one training step" in text and "941.9 MiB" not in text


def test_rows_means_stds_and_ratios(written):
    text = (written[0] / "fake_table.md").read_text()
    header, rows = table_rows(text, "| data.batch_size")
    assert header[:5] == ["data.batch_size", "gradient", "n", "test acc (%)", "Δ test acc (%) vs exact"]
    assert [(row["data.batch_size"], row["gradient"]) for row in rows] == [
        ("8", "exact"), ("8", "exact + 1-bit ReLU"), ("8", "checkpoint sqrt"), ("8", "XConv r=4 channel"),
        ("8", "XConv r=4 channel + 1-bit ReLU"), ("16", "exact"), ("16", "XConv r=4 channel")]
    by_label = {(row["data.batch_size"], row["gradient"]): row for row in rows}
    exact8, xconv8 = by_label["8", "exact"], by_label["8", "XConv r=4 channel"]
    assert exact8["n"] == "2"
    assert exact8["test acc (%)"] == f"85.00 ± {statistics.stdev([80.0, 90.0]):.2f}"  # 7.07
    assert exact8["Δ test acc (%) vs exact"] == "ref"
    assert xconv8["test acc (%)"] == f"72.00 ± {statistics.stdev([70.0, 74.0]):.2f}"
    # paired by seed: 0.70 - 0.80 and 0.74 - 0.90
    assert xconv8["Δ test acc (%) vs exact"] == f"-13.00 ± {statistics.stdev([-10.0, -16.0]):.2f}"
    assert by_label["16", "XConv r=4 channel"]["Δ test acc (%) vs exact"] == "-11.00 ± 1.41"  # vs exact at 16
    memory = [cell for cell in header if cell == "vs exact"]
    assert len(memory) == 2 and header[-1] == "vs exact (one loop)"  # activation, peak; step
    # the step ratio is the one-loop timing's (1.5), not the runs' (20 ms / 10 ms); untimed rows: n/a
    assert by_label["16", "XConv r=4 channel"]["vs exact (one loop)"] == "n/a"
    assert xconv8["act. memory"] == "2.0 MiB" and exact8["act. memory"] == "8.0 MiB"
    assert by_label["8", "checkpoint sqrt"]["act. memory"] == "9.0 MiB"  # kept 8 + recomputed 1
    cells = next(line for line in text.splitlines() if line.startswith("| 8 | XConv r=4 channel |"))
    assert "| 2.0 MiB | 0.25 | 4.0 MiB | 0.25 |" in cells and cells.endswith("| 20.0 | 1.5 |")
    # the pivot by batch size and the gap to exact by batch size (no exact row there)
    _, pivot = table_rows(text, "| gradient | 8 | 16 |")
    assert pivot[0] == {"gradient": "exact", "8": "85.00 ± 7.07", "16": "62.00 ± 2.83"}
    _, gaps = table_rows(text.split("## Δ")[1], "| gradient | 8 | 16 |")
    assert {"gradient": "XConv r=4 channel", "8": "-13.00 ± 4.24", "16": "-11.00 ± 1.41"} in gaps
    assert "exact" not in [row["gradient"] for row in gaps]


def test_csv_matches(written):
    records = list(csv.DictReader(io.StringIO((written[0] / "fake_table.csv").read_text())))
    assert len(records) == 7
    record = next(r for r in records if r["gradient"] == "XConv r=4 channel" and r["data.batch_size"] == "8")
    assert record["table"] == "fake_table" and record["mode"] == "xconv" and record["probes"] == "4"
    assert record["seeds"] == "0 1" and record["n"] == "2"
    assert float(record["test/acc_mean"]) == pytest.approx(0.72)
    assert float(record["test/acc_std"]) == pytest.approx(statistics.stdev([0.70, 0.74]))
    assert float(record["test/acc_delta_vs_exact"]) == pytest.approx(-0.13)
    assert float(record["test/acc_delta_seed_std"]) == pytest.approx(statistics.stdev([-0.10, -0.16]))
    assert float(record["saved_vs_exact"]) == pytest.approx(0.25)
    assert float(record["step_vs_exact"]) == pytest.approx(1.5) and float(record["median_step_s"]) == pytest.approx(0.02)
    checkpointed = next(r for r in records if r["mode"] == "checkpoint")
    assert checkpointed["checkpoint"] == "sqrt" and checkpointed["gradient"] == "checkpoint sqrt"


def test_paper_numbers_and_baseline_beside_ours(written):
    text = (written[0] / "fake_sr.md").read_text()
    header, rows = table_rows(text, "| gradient")
    assert "paper PSNR (dB)" in header and "paper peak (MiB)" in header
    exact, r16, r1024 = rows
    assert exact["gradient"] == "exact" and exact["paper PSNR (dB)"] == "28.58" and exact["paper peak (MiB)"] == "683"
    assert r16["paper PSNR (dB)"] == "n/a" and r16["paper peak (MiB)"] == "n/a"  # the paper has no r=16
    assert r1024["gradient"] == "XConv r=1024 channel" and r1024["paper PSNR (dB)"] == "28.14"
    assert r1024["paper Δ vs exact"] == "-0.44" and r1024["Δ PSNR-Y best (dB) vs exact"] == "+1.00"
    assert "- baseline: bicubic x4 upsampling, PSNR-Y (dB) = 18.50" in text
    assert ("- best iterate = the last step in 2 of 3 runs (exact: 1; XConv r=1024 channel: 1): those runs were "
            "still improving when training stopped, so their rows are not converged") in text


def test_headline(written):
    text = (written[0] / "headline.md").read_text()
    _, rows = table_rows(text, "| table")
    assert rows == [{"table": "fake_sr", "task": "superres", "metric": "PSNR-Y best (dB)", "exact": "20.00",
                     "gradient": "XConv r=16 channel", "XConv": "20.02", "Δ vs exact": "+0.02",
                     "Δ 95% CI (paired by seed)": "n/a",  # one seed: no interval
                     "act. memory factor (exact / XConv)": "4", "step time ratio (side by side)": "1.23",
                     "settings": "-"}]
    assert "- no r=16 channel row (or no exact row) in: fake_table" in text


def test_rerun_is_byte_identical(make_tables, fake_runs, written, tmp_path):
    make_tables.main([str(fake_runs), "--out", str(tmp_path), "--headline", "--timing", str(written[2])])
    first = sorted(path.name for path in written[0].iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == first
    for name in first:  # md, csv and png
        assert (tmp_path / name).read_bytes() == (written[0] / name).read_bytes(), name


def test_copied_runs_give_the_same_tables(make_tables, fake_runs, written, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_tables.main([str(fake_runs), "--out", str(out), "--copy-runs", str(runs), "--no-figures",
                      "--timing", str(written[2])])
    folders = sorted(path.name for path in (runs / "fake_table").iterdir())
    assert len(folders) == 14 and "xconv-r4-channel-bitrelu_batch_size8_seed1" in folders
    assert "exact-bitrelu_batch_size8_seed0" in folders
    assert "checkpoint-sqrt_batch_size8_seed0" in folders
    copied = runs / "fake_sr" / "xconv-r16-channel_seed0"
    assert sorted(str(path.relative_to(copied)) for path in copied.rglob("*") if path.is_file()) == [
        "images/test_images_step10.png", "summary.json"]
    assert (runs / "fake_table" / "exact_batch_size8_seed0" / "csv" / "metrics.csv").is_file()
    for name in ("fake_table.md", "fake_table.csv", "fake_sr.md", "fake_sr.csv"):
        assert (out / name).read_bytes() == (written[0] / name).read_bytes(), name
    # and from the copies alone
    again = tmp_path / "again"
    make_tables.main([str(runs), "--out", str(again), "--no-figures", "--timing", str(written[2])])
    for name in ("fake_table.md", "fake_table.csv", "fake_sr.md", "fake_sr.csv"):
        assert (again / name).read_bytes() == (written[0] / name).read_bytes(), name


def test_bad_input(make_tables, fake_runs, tmp_path):
    with pytest.raises(SystemExit, match="no-such-folder: no such run folder"):
        make_tables.main([str(tmp_path / "no-such-folder"), "--out", str(tmp_path)])
    clash = tmp_path / "clash"
    shutil.copytree(fake_runs / "sweep" / "0_classification_probes0_seed0", clash / "a")
    shutil.copytree(fake_runs / "sweep" / "0_classification_probes0_seed0", clash / "b")
    with pytest.raises(SystemExit, match="two runs with the same settings and seed 0"):
        make_tables.main([str(clash), "--out", str(tmp_path)])
    (clash / "b" / "summary.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a harness summary"):
        make_tables.main([str(clash), "--out", str(tmp_path)])


def test_committed_tables_regenerate_byte_for_byte(make_tables, tmp_path):
    """results/*.md and *.csv are exactly what make_tables writes from results/runs."""
    runs = ROOT / "results" / "runs"
    assert runs.is_dir(), "results/runs (the committed run summaries) is missing"
    written = make_tables.main([str(runs), "--out", str(tmp_path), "--headline", "--no-figures", "--allow-untraced",
                                "--timing", str(ROOT / "results" / "table_timing.csv")])  # as their headers say: runs from before commits were recorded
    assert written
    for path in written:
        committed = ROOT / "results" / path.name
        assert committed.is_file(), f"results/{path.name} is not committed"
        assert path.read_bytes() == committed.read_bytes(), f"results/{path.name} differs from its runs"


def test_runs_from_a_dirty_or_unrecorded_tree_are_refused_unless_allowed(make_tables, tmp_path, capsys):
    common = dict(command="python -m xconv.run experiment=fake_table probes=0", task="classification",
                  gradient_=gradient(0), batch=32, metrics={"test/acc": 0.9}, saved=1.0, peak=1.0, step=0.01,
                  date="2026-01-01T00:00:00+00:00")
    write_run(tmp_path / "runs" / "a", seed=0, **common)
    write_run(tmp_path / "runs" / "b", seed=1, code={"source": "git", "commit": COMMIT, "clean": False}, **common)
    with pytest.raises(SystemExit, match=r"error: table fake_table: 1 of 2 runs are not traceable to a clean "
                                         r"commit \(e.g. .*b: its tree had uncommitted changes\).*--allow-untraced"):
        make_tables.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-figures"])
    assert not (tmp_path / "out").exists()  # nothing written
    (path,) = [p for p in make_tables.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-figures",
                                            "--allow-untraced"]) if p.suffix == ".md"]
    header = path.read_text()
    assert "- code: commit 0123456 (clean tree), 1 run; commit 0123456 (UNCOMMITTED CHANGES), 1 run" in header
    assert "--headline --allow-untraced` (the runs' summaries" in header


def test_runs_with_only_a_cpu_rss_peak_show_no_peak(tmp_path):
    """CPU peak-RSS growth measures the allocator: a run without a fake (or CUDA) peak shows n/a."""
    from xconv_harness.studies.make_tables import main

    for probes, seed in ((0, 0), (4, 0)):
        write_run(tmp_path / "runs" / f"r{probes}", command=CLASSIFY, task="classification",
                  gradient_=gradient(probes), seed=seed, batch=32, metrics={"test/acc": 0.9}, saved=1.0 + probes,
                  peak=None, step=0.01, date="2026-01-01T00:00:00+00:00")
    written = main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-figures"])
    text = next(path for path in written if path.suffix == ".md").read_text()
    assert "peak memory = n/a (the run recorded only CPU peak-RSS growth" in text
    assert "941.9 MiB" not in text and "987654321" not in text


def test_the_gap_interval_is_a_paired_student_t_interval():
    """Differences -0.10 and -0.16 over seeds 0, 1: mean -0.13, sd 0.0424, t(0.975, 1) = 12.706, so
    -0.13 ± 0.381; three seeds with differences -0.1, 0, +0.05 give -0.0167 ± 0.190 (t(0.975, 2) = 4.303)."""
    from types import SimpleNamespace

    from xconv_harness.studies.make_tables import delta_interval, interval_text

    def row(values):
        return SimpleNamespace(metric_by_seed=lambda key: dict(enumerate(values)))

    metric = SimpleNamespace(key="test/acc", scale=100, digits=2)
    low, high = delta_interval(metric, row([0.70, 0.74]), row([0.80, 0.90]))
    assert abs(low - (-0.13 - 0.3812)) < 1e-3 and abs(high - (-0.13 + 0.3812)) < 1e-3
    low, high = delta_interval(metric, row([0.9, 1.0, 1.05]), row([1.0, 1.0, 1.0]))
    assert abs(low + 0.0167 + 0.1897) < 1e-3 and abs(high + 0.0167 - 0.1897) < 1e-3
    assert interval_text(metric, (low, high)) == "[-20.64, +17.31] (includes 0)"
    assert interval_text(metric, (-0.5, -0.1)) == "[-50.00, -10.00]"
    assert delta_interval(metric, row([0.7]), row([0.8])) is None  # one seed
    assert delta_interval(metric, row([0.7]), row([0.8, 0.9, 1.0])) is None  # one seed in common
    assert delta_interval(metric, row([0.7, 0.8]), row([0.8, 0.9, 1.0])) == pytest.approx((-0.1, -0.1))  # seeds 0, 1


def test_a_row_with_fewer_seeds_is_paired_on_the_seeds_both_rows_ran(make_tables, tmp_path):
    common = dict(command="python -m xconv.run -m experiment=fake_pairs", task="classification", batch=32,
                  saved=1.0, peak=1.0, step=0.01, date="2026-01-01T00:00:00+00:00")
    for seed, accuracy in enumerate((0.80, 0.90, 0.50)):  # exact over seeds 0-2
        write_run(tmp_path / "runs" / f"e{seed}", seed=seed, gradient_=gradient(0), metrics={"test/acc": accuracy},
                  **common)
    for seed, accuracy in enumerate((0.70, 0.78)):  # XConv stopped after seeds 0 and 1
        write_run(tmp_path / "runs" / f"x{seed}", seed=seed, gradient_=gradient(4), metrics={"test/acc": accuracy},
                  **common)
    (path,) = [p for p in make_tables.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-figures"])
               if p.suffix == ".md"]
    _, rows = table_rows(path.read_text(), "| gradient")
    # paired on seeds 0 and 1: -10 and -12 points (the means' difference, 74 - 73.3, would be +0.67)
    assert rows[1]["Δ test acc (%) vs exact"] == f"-11.00 ± {statistics.stdev([-10.0, -12.0]):.2f}"


def test_a_sweep_without_an_exact_row_still_gets_its_figures(make_tables, tmp_path):
    """A sweep of XConv rows only (its exact runs in another sweep): no change against exact to plot, and
    the figures are drawn without failing on an empty log-scaled axis."""
    common = dict(command="python -m xconv.run -m experiment=fake_xonly", task="classification", batch=32,
                  saved=1.0, peak=1.0, step=0.01, date="2026-01-01T00:00:00+00:00")
    for probes, accuracy in ((4, 0.7), (16, 0.8)):
        write_run(tmp_path / "runs" / f"x{probes}", seed=0, gradient_=gradient(probes), metrics={"test/acc": accuracy},
                  **common)
    written = make_tables.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert any(p.name == "fake_xonly_metric.png" and p.stat().st_size > 0 for p in written)


def test_a_one_seed_row_is_paired_with_exact_at_its_seed(make_tables):
    """A memory-mode row run at seed 0 only is compared with exact's seed 0, not with exact's mean over
    seeds 0-2 (seed noise): here bit-identical, so Δ is 0.00; no spread and no interval from one pair."""
    from xconv_harness.studies.run_summaries import Gradient, Row, Run

    def row(gradient, accuracies):
        runs = [Run(Path("."), {"seed": seed, "metrics": {"test/acc": acc}}, "t", gradient, {})
                for seed, acc in accuracies.items()]
        return Row((), gradient, runs)
    exact = row(Gradient("exact", 0, "", "exact", "none"), {0: 0.90, 1: 0.80, 2: 0.70})
    lossless = row(Gradient("exact", 0, "", "exact", "none", "lossless"), {0: 0.90})
    metric = type("Metric", (), {"key": "test/acc"})()  # the differences read only its key
    assert make_tables.delta(metric, lossless, exact) == 0.0
    assert make_tables.delta_spread(metric, lossless, exact) is None
    assert make_tables.delta_interval(metric, lossless, exact) is None
