"""Smoke test of the benchmark harness, so it does not rot: ``bench.run --quick`` for fastckpt alone.

Runs the real runner in a subprocess (as a user would) on the tutorial workload, the GEMM-only
floor and issue 13's tabular and lnmlp workloads, then checks the JSON it wrote holds sane, positive
numbers. Needs neither PyTorch nor TensorFlow: ``--peers fastckpt`` leaves them out, and they are
not imported otherwise.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(summary, key):
    s = summary[key]
    assert s["n"] >= 1
    assert 0 < s["min"] <= s["median"] <= s["max"] < float("inf"), (key, s)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # The script form (run.py puts the repository root at the end of sys.path itself), from a
    # neutral cwd: conftest sets PYTHONSAFEPATH, and the source tree must not shadow the installed
    # fastckpt.
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--peers", "fastckpt",
         "--workloads", "tutorial", "gemm_floor", "tabular", "lnmlp", "--out", str(out), "--no-chart"],
        cwd=str(out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_gemm_floor_numbers(quick_run):
    out, _ = quick_run
    res = json.loads((out / "gemm_floor.json").read_text())
    st = res["cases"]["fastckpt"]
    assert st["status"] == "ok", st
    for key in ("fit_s", "predict_s", "fit_gflops", "peak_rss_mb"):
        _positive(st["summary"], key)
    assert "torch" not in res["cases"]  # --peers fastckpt: PyTorch never started
    assert res["reference"] == "fastckpt"


def test_tutorial_numbers(quick_run):
    out, stdout = quick_run
    res = json.loads((out / "tutorial.json").read_text())
    st = res["cases"]["fastckpt"]
    # fastckpt has fit: the workload must have run (no early return that a missing fit would pass).
    assert st["status"] == "ok", st
    for key in ("fit_s", "predict_s", "samples_per_s", "peak_rss_mb"):
        _positive(st["summary"], key)
    assert 0.0 <= st["summary"]["train_acc"]["median"] <= 1.0
    # No time limits here (timing belongs to bench/): only that the figures are there and sane.
    assert {st["group"] for st in res["cases"].values()} == {"fastckpt"}  # no other peer ran
    # The one printed table, with the fastckpt rows in it.
    assert "| tutorial | fit (s) | fastckpt |" in stdout
    assert (out / "latest_table.md").read_text().strip()


@pytest.mark.parametrize("workload", ["tabular", "lnmlp"])
def test_breadth_workloads_numbers(quick_run, workload):
    """Issue 13's workloads (Functional model with Embeddings + BatchNorm; LayerNorm + GELU MLP) run."""
    out, stdout = quick_run
    res = json.loads((out / f"{workload}.json").read_text())
    st = res["cases"]["fastckpt"]
    assert st["status"] == "ok", st
    for key in ("fit_s", "predict_s", "samples_per_s", "peak_rss_mb"):
        _positive(st["summary"], key)
    assert 0.0 <= st["summary"]["train_acc"]["median"] <= 1.0
    assert set(res["cases"]) == {"fastckpt"}
    assert f"| {workload} | fit throughput (samples/s) | fastckpt |" in stdout


def test_floor_schedule_matches_known_flops():
    """The floor's products are the tutorial's: ≈1.64 GFLOP training + 0.81 validation per epoch."""
    sys.path.insert(0, ROOT)
    try:
        from bench.workloads import gemm_floor, tutorial
    finally:
        sys.path.remove(ROOT)
    cfg = tutorial.config(quick=False)
    sched = gemm_floor.schedule(cfg)
    per_epoch = gemm_floor.flops(sched["fit"]) / cfg["epochs"]
    assert per_epoch == pytest.approx(1.64e9 + 0.81e9, rel=0.01)
    # 32 training batches × 5 products + 32 validation batches × 2 products, per epoch.
    assert len(sched["fit"]) == cfg["epochs"] * (32 * 5 + 32 * 2)
    assert len(sched["predict"]) == 32 * 2


def test_model_checkpoint_breakdown_runs(tmp_path):
    """``bench/mc_breakdown.py`` (the split of ModelCheckpoint's cost) runs and prints every figure."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "mc_breakdown.py"), "--rounds", "1",
         "--dir", str(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    for label in ("fit 10 epochs", "epoch (begin -> end)", "callback, main thread", "writer (worker thread)"):
        assert label in lines, proc.stdout
    ratio = float(lines["fit 10 epochs"].rsplit("ratio", 1)[1])
    assert 0 < ratio < float("inf"), proc.stdout  # a figure was measured; its size is bench/'s business
    assert float(lines["writer (worker thread)"].split()[3]) > 0, proc.stdout  # the writer did run
    assert os.listdir(tmp_path) == [], "the checkpoints were left behind"
