"""Benchmark runner: ``python -m bench.run [--quick] [--workloads ...] [--peers ...] [--repeats N]``.

For every workload it generates the data once (seeded), then runs each case in a fresh child
interpreter, alternating between cases (A B C A B C …) so slow drifts of a shared machine spread
over all of them, and never two children at once. It prints ONE table (medians, min–max, ratios to
the reference case), and writes ``bench/results/<workload>.json`` plus a PNG chart when matplotlib
is installed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` importable
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import report  # noqa: E402
from bench.workloads.base import PEERS, THREADS, dump_json, median  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "bench", "child.py")
WORKLOADS = ("tutorial", "gemm_floor", "blas_peak", "large", "wide", "checkpoint", "tabular", "lnmlp")
#: --quick runs these by default: the large/wide workloads are the tutorial's code path at other
#: sizes, and their TensorFlow imports alone would blow the quick mode's one-minute budget. The
#: issue-13 breadth workloads (tabular, lnmlp) are other code paths (Functional graph, Embedding,
#: BatchNorm, LayerNorm, GELU), so they are in, at 512 rows × 1 epoch.
QUICK_WORKLOADS = ("tutorial", "gemm_floor", "blas_peak", "checkpoint", "tabular", "lnmlp")
#: --fastckpt-path: children import fastckpt from this directory (a pinned build) when set.
FASTCKPT_PATH = None


def child_env() -> dict:
    """The same thread settings for every child, whatever library it loads."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(THREADS), "OPENBLAS_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS), "TF_NUM_INTRAOP_THREADS": str(THREADS),
        "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
    })
    # ``bench`` must be importable in the child, but the repository root must NOT come first on
    # the path: its ``fastckpt/`` source folder would shadow the installed, compiled package.
    env["BENCH_ROOT"] = ROOT
    if FASTCKPT_PATH:
        env["BENCH_FASTCKPT_PATH"] = FASTCKPT_PATH
    return env


def _cpu_times():
    """(busy, steal) CPU seconds of the whole machine so far, all cores, from /proc/stat.

    busy excludes idle, iowait and steal; steal is time the hypervisor gave our vCPUs to other VMs.
    """
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    v += [0] * (8 - len(v))
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.5) -> float:
    """Waits (up to max_wait_s) until other processes use < threshold cores; returns the last load.

    A 2-thread peer on 2 cores loses far more than half its speed when another process takes a
    core (OpenMP barriers wait for the descheduled thread), so starting a run in a quiet moment
    buys more accuracy than any number of repeats. The parent is idle while it samples.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        b0, t0 = _cpu_times()[0], time.perf_counter()
        time.sleep(0.5)
        load = (_cpu_times()[0] - b0) / (time.perf_counter() - t0)
        if load < threshold_cores or time.monotonic() >= deadline:
            return load
        time.sleep(1.0)


def run_child(case, cfg, data, tmpdir, timeout_s: float) -> dict:
    spec = {"case": case.name, "target": case.target, "params": case.params, "cfg": cfg, "data": data}
    spec_path = os.path.join(tmpdir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    err_path = os.path.join(tmpdir, "child.err")
    with open(err_path, "w") as err:
        # cwd = tmpdir so neither the repository nor the caller's directory shadows a package.
        proc = subprocess.Popen([sys.executable, CHILD, spec_path], cwd=tmpdir, env=child_env(),
                                stdout=subprocess.PIPE, stderr=err)
        os.sync()  # flush dirty pages (input data, earlier runs) so writeback does not throttle this run
        (busy0, steal0), t0 = _cpu_times(), time.perf_counter()
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            stdout = proc.stdout.read().decode(errors="replace")
            # wait4 gives this child's own rusage: ru_maxrss is its peak RSS (KiB on Linux).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            (busy1, steal1), wall = _cpu_times(), time.perf_counter() - t0
        finally:
            killer.cancel()
            proc.stdout.close()
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        with open(err_path, errors="replace") as f:
            tail = f.read()[-1500:]
        return {"status": "error", "note": f"child exited {proc.returncode} without a result "
                f"(timeout {timeout_s:.0f}s?)", "stderr_tail": tail}
    res = json.loads(line[len("BENCH_RESULT "):])
    # The child's own VmHWM where it reports one: wait4's ru_maxrss is at least this process's
    # RSS at the spawn (the tutorial's data alone puts it at ~63 MB, above the memory budget).
    res["peak_rss_mb"] = res.get("vm_hwm_mb") or usage.ru_maxrss / 1024.0
    # The noise gauge: CPU the rest of the machine used while this child ran, in cores (0 = quiet,
    # 1 = another process kept a whole core busy; on 2 cores that halves a 2-thread peer).
    child_cpu = usage.ru_utime + usage.ru_stime
    wall = max(wall, 1e-9)
    res["others_cores"] = max(0.0, (busy1 - busy0 - child_cpu) / wall)
    res["steal_cores"] = max(0.0, (steal1 - steal0) / wall)
    res["involuntary_switches"] = usage.ru_nivcsw
    return res


def _selected(case, peers) -> bool:
    return case.group == "baseline" or case.group in peers


def run_workload(name, args, tmpdir) -> dict:
    mod = importlib.import_module(f"bench.workloads.{name}")
    cfg = mod.config(args.quick)
    state = {}
    for case in mod.cases(cfg):
        if not _selected(case, args.peers):
            continue
        missing = case.missing_modules()
        state[case.name] = {"group": case.group, "note": case.note, "runs": [],
                            "status": "skipped" if missing else "pending"}
        if missing:
            state[case.name]["note"] = f"not installed ({', '.join(missing)})"
    cases = [c for c in mod.cases(cfg) if c.name in state]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    data = mod.prepare(cfg, tmpdir) if any(s["status"] == "pending" for s in state.values()) else {}
    for rep in range(args.repeats):
        for case in cases:
            st = state[case.name]
            if st["status"] not in ("pending", "ok"):
                continue
            print(f"  [{name}] run {rep + 1}/{args.repeats}: {case.name} …", end="", flush=True)
            pre_load = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
            res = run_child(case, cfg, data, tmpdir, args.timeout)
            res["others_cores_before"] = pre_load
            if res["status"] != "ok":
                st["status"], st["note"] = res["status"], res.get("note", "")
                if "traceback" in res or "stderr_tail" in res:
                    st["detail"] = res.get("traceback") or res.get("stderr_tail")
                print(f" {res['status']}: {st['note']}")
                continue
            metrics = res["metrics"]
            if hasattr(mod, "derive"):
                metrics = mod.derive(cfg, metrics)
            for k in ("peak_rss_mb", "others_cores", "steal_cores", "involuntary_switches",
                      "others_cores_before"):
                metrics[k] = res[k]
            st["runs"].append(metrics)
            st["status"] = "ok"
            print(f" {res['child_wall_s']:.1f}s (others used {res['others_cores']:.2f} cores, "
                  f"steal {res['steal_cores']:.2f})")
    for st in state.values():
        keys = sorted({k for r in st["runs"] for k, v in r.items() if isinstance(v, (int, float))})
        st["summary"] = {k: _stats([r.get(k) for r in st["runs"]]) for k in keys}
    ref = next((r for r in mod.REFERENCE if state.get(r, {}).get("status") == "ok"), None)
    return {
        "workload": name, "title": mod.TITLE, "config": cfg, "quick": args.quick,
        "repeats": args.repeats, "reference": ref, "cases": state,
        "metrics": [m.__dict__ for m in mod.METRICS],
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "wall_s": time.perf_counter() - t_start,
    }


def _stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def environment() -> dict:
    """What was measured on what: versions without importing frameworks into this process."""
    from importlib import metadata

    versions = {}
    for dist in ("fastckpt", "numpy", "torch", "tensorflow", "tensorflow-cpu", "tf_keras", "keras",
                 "safetensors", "h5py", "scipy-openblas32", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        out = subprocess.run([sys.executable, CHILD, "--probe"], capture_output=True, text=True,
                             timeout=120, cwd=tempfile.gettempdir(), env=child_env())
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_RESULT ")][-1]
        fastckpt_build = json.loads(line[len("BENCH_RESULT "):])
    except Exception as e:  # noqa: BLE001 — metadata only; never fail a run over it
        fastckpt_build = {"error": str(e)}
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    bench_rev = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True,
                               text=True).stdout.strip()
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "threads": THREADS, "versions": versions,
        "fastckpt_build": fastckpt_build, "bench_git": bench_rev,
        # OpenBLAS picks its kernels by CPU detection unless this is set; it changes the numbers.
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, 1 repeat, workloads " + " ".join(QUICK_WORKLOADS))
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, metavar="W",
                    help=f"subset of: {' '.join(WORKLOADS)} (default: all; quick: a subset)")
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS), metavar="P",
                    help=f"subset of: {' '.join(PEERS)} (baselines always run)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per case (default 3; quick 1)")
    ap.add_argument("--out", default=None,
                    help="results directory (default bench/results, quick: bench/results/quick)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child run")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG charts")
    ap.add_argument("--fastckpt-path", default=None,
                    help="import fastckpt from this directory (a pinned `pip install --target` build) "
                         "instead of the installed package; see bench/README.md")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each run, wait up to this many seconds for other processes to use "
                         "< 0.5 cores (default 3; quick 0)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 3.0
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.fastckpt_path:
        global FASTCKPT_PATH
        FASTCKPT_PATH = os.path.abspath(args.fastckpt_path)
        if not os.path.isdir(os.path.join(FASTCKPT_PATH, "fastckpt")):
            ap.error(f"--fastckpt-path: expected a directory containing fastckpt/, got {FASTCKPT_PATH}")
    workloads = args.workloads or (QUICK_WORKLOADS if args.quick else WORKLOADS)
    out_dir = args.out or os.path.join(ROOT, "bench", "results", "quick" if args.quick else "")
    os.makedirs(out_dir, exist_ok=True)

    env = environment()
    print(f"bench: {', '.join(workloads)}; peers {', '.join(args.peers)}; {args.repeats} repeat(s); "
          f"{'quick' if args.quick else 'full'}; {env['host_cpus']} CPUs, load {os.getloadavg()[0]:.2f}")
    results = []
    tmpdir = tempfile.mkdtemp(prefix="bench_")
    try:
        for name in workloads:
            res = run_workload(name, args, tmpdir)
            res["environment"] = env
            dump_json(os.path.join(out_dir, f"{name}.json"), res)
            if not args.no_chart:
                res["chart"] = report.write_chart(res, os.path.join(out_dir, f"{name}.png"))
            results.append(res)
            for f in os.listdir(tmpdir):  # data of finished workloads (the 500 MB set) goes now
                p = os.path.join(tmpdir, f)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    table = report.render(results, env)
    print()
    print(table)
    with open(os.path.join(out_dir, "latest_table.md"), "w") as f:
        f.write(table + "\n")
    return 0 if all(s["status"] != "error" for r in results for s in r["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
