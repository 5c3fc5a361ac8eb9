"""The printed table, the target notes and the PNG charts, from the runner's result dicts."""

from __future__ import annotations

import os

#: Metrics shown in the printed table (the JSON keeps all of them). Checkpoint: the tutorial set in
#: ms (it is small, latency matters), the 500 MB set in GB/s (throughput matters).
TABLE_METRICS = {
    "tutorial": ("fit_s", "predict_s", "predict_one_s", "predict_gflops"),
    "gemm_floor": ("fit_s", "predict_s", "fit_gflops"),
    "large": ("samples_per_s", "gemm_gflops"),
    "wide": ("samples_per_s", "gemm_gflops"),
    "checkpoint": ("tutorial_save_s", "tutorial_load_s", "large_save_gbs", "large_load_gbs",
                   "large_open_s"),
    "tabular": ("samples_per_s", "predict_s"),
    "lnmlp": ("samples_per_s", "predict_s"),
}

PEER_DISTS = {"fastckpt": ("fastckpt",), "torch": ("torch",),
              "tf_keras": ("tf_keras", "tensorflow"), "keras3": ("keras", "tensorflow")}


def _fmt(v) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _metric_defs(res):
    return {m["key"]: m for m in res["metrics"]}


def _shown(res):
    defs = _metric_defs(res)
    keys = TABLE_METRICS.get(res["workload"], tuple(defs))
    return [defs[k] for k in keys if k in defs]


def _med(res, case, key):
    st = res["cases"].get(case)
    if not st or st["status"] != "ok":
        return None
    s = st.get("summary", {}).get(key)
    return s["median"] if s else None


def render(results, env) -> str:
    lines = []
    v = env["versions"]
    tf = v.get("tensorflow") or v.get("tensorflow-cpu")
    lines.append(f"fastckpt bench — {env['when']} — {env['host_cpus']} CPUs ({env['cpu']}), "
                 f"{env['threads']} threads per peer, Python {env['python']}")
    fb = env.get("fastckpt_build", {})
    lines.append(f"Versions: fastckpt {v.get('fastckpt')} ({fb.get('source', fb.get('error', '?'))}; "
                 f"{fb.get('blas', '?')}), torch {v.get('torch')}, tf_keras {v.get('tf_keras')}, "
                 f"keras {v.get('keras')} (TF {tf} backend), safetensors {v.get('safetensors')}, "
                 f"h5py {v.get('h5py')}, numpy {v.get('numpy')}; "
                 f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE') or 'unset'}")
    present = sorted({c for r in results for c, s in r["cases"].items() if s["status"] == "ok"})
    absent = sorted({f"{c} ({s['note']})" for r in results for c, s in r["cases"].items()
                     if s["status"] != "ok"})
    lines.append(f"Measured: {', '.join(present) or 'none'}. "
                 f"Not measured: {'; '.join(absent) or 'none'}.")
    reps = sorted({r["repeats"] for r in results})
    lines.append(f"Each case: {'/'.join(map(str, reps))} run(s), each in a fresh process, alternating "
                 "between cases; median and min–max of the runs. Ratio = value(case) / value(ref) "
                 "of that metric: for times (s, ms) > 1× means the ref is faster; for rates "
                 "(GFLOP/s, GB/s, samples/s) < 1× means the ref is faster.")
    lines.append("")
    lines.append("'others' = CPU cores the rest of the machine kept busy while the case's children ran "
                 "(median and max over runs; 0 = quiet, 1.0 = a whole core of the 2 taken).")
    lines.append("")
    lines.append("| workload | metric | case | median | min–max | runs | ratio vs ref | peak RSS MB | others |")
    lines.append("|---|---|---|---:|---:|---:|---|---:|---:|")
    for res in results:
        ref = res["reference"]
        for i, m in enumerate(_shown(res)):
            for case, st in res["cases"].items():
                if st["status"] != "ok":
                    if i == 0:
                        lines.append(f"| {res['workload']} | — | {case} | {st['status']}: "
                                     f"{st['note']} | | | | | |")
                    continue
                s = st["summary"].get(m["key"])
                if not s:
                    continue
                k = m["scale"]
                rss = st["summary"].get("peak_rss_mb")
                noise = st["summary"].get("others_cores")
                # Per-case columns: printed once, on the case's first metric row of the workload.
                rss_s = _fmt(rss["median"]) if (rss and i == 0) else ""
                noise_s = f"{noise['median']:.2f} (max {noise['max']:.2f})" if (noise and i == 0) else ""
                ratio = "ref" if case == ref else "—"
                refv = _med(res, ref, m["key"]) if ref else None
                if case != ref and refv:
                    ratio = f"{case}/{ref} = {s['median'] / refv:.2f}×"
                lines.append(
                    f"| {res['workload']} | {m['label']} ({m['unit']}) | {case} | "
                    f"{_fmt(s['median'] * k)} | {_fmt(s['min'] * k)}–{_fmt(s['max'] * k)} | "
                    f"{s['n']} | {ratio} | {rss_s} | {noise_s} |")
    notes = target_notes({r["workload"]: r for r in results})
    if any(r["quick"] for r in results):
        lines += ["", "Quick mode: tiny sizes, so no target is assessed."]
    elif notes:
        lines.append("")
        lines.append("Targets (issues 2, 3, 6, 13), from the medians above:")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


#: Median cores other processes used during a case's runs above which a target verdict built on
#: it is flagged: a 2-thread peer sharing 2 cores with a busy neighbour measures the neighbour.
NOISY_CORES = 0.5


def _noise(res, case):
    st = res["cases"].get(case) if res else None
    s = st and st.get("summary", {}).get("others_cores")
    return s["median"] if s else 0.0


def _ratio_line(label, num, den, target, higher_is_better=True, noise=0.0) -> str:
    if num is None or den is None or den == 0:
        return f"{label}: not measured in this run"
    r = num / den
    ok = r >= target if higher_is_better else r <= target
    rel = "≥" if higher_is_better else "≤"
    line = f"{label}: {r:.2f}× (target {rel} {target}×) {'met' if ok else 'NOT met'}"
    if noise >= NOISY_CORES:
        line += f" — UNRELIABLE: other processes used {noise:.2f} cores during these runs"
    return line


def target_notes(by_name) -> list:
    notes = []
    tut, floor = by_name.get("tutorial"), by_name.get("gemm_floor")
    if tut:
        fk = _med(tut, "fastckpt", "fit_s")
        nz = lambda *cs: max(_noise(r, c) for r, c in cs)  # noqa: E731
        n_torch = nz((tut, "fastckpt"), (tut, "torch"))
        notes.append(_ratio_line("fit speed-up vs PyTorch (torch fit / fastckpt fit)",
                                 _med(tut, "torch", "fit_s"), fk, 5.0, noise=n_torch))
        notes.append(_ratio_line("fit speed-up vs tf.keras (tf_keras fit / fastckpt fit)",
                                 _med(tut, "tf_keras", "fit_s"), fk, 10.0,
                                 noise=nz((tut, "fastckpt"), (tut, "tf_keras"))))
        fp = _med(tut, "fastckpt", "predict_s")
        notes.append(_ratio_line("predict speed-up vs PyTorch's batch-32 loop (torch / fastckpt)",
                                 _med(tut, "torch", "predict_s"), fp, 2.0, noise=n_torch))
        notes.append(_ratio_line("predict speed-up vs PyTorch's one call on all rows "
                                 "(torch model(x) / fastckpt predict)",
                                 _med(tut, "torch", "predict_one_s"), fp, 1.3, noise=n_torch))
        peak = _med(by_name.get("blas_peak") or {"cases": {}}, "fastckpt-2t", "gflops_1000x784x512")
        rate = _med(tut, "fastckpt", "predict_gflops")
        if rate:
            line = f"(context) fastckpt predict runs at {rate:.0f} GFLOP/s"
            if peak:
                line += f", {rate / peak:.0%} of its 2-thread 1000×784×512 GEMM ({peak:.0f} GFLOP/s)"
            torch_one = _med(tut, "torch", "predict_one_gflops")
            if torch_one:
                line += f"; PyTorch's one call {torch_one:.0f} GFLOP/s"
            notes.append(line)
        if floor:
            notes.append(_ratio_line("fastckpt fit / its GEMM-only floor (fastckpt gemm)", fk,
                                     _med(floor, "fastckpt", "fit_s"), 1.5, higher_is_better=False,
                                     noise=nz((tut, "fastckpt"), (floor, "fastckpt"))))
            tf_, tfl = _med(tut, "torch", "fit_s"), _med(floor, "torch", "fit_s")
            if tf_ and tfl:
                notes.append(f"(context) PyTorch fit / torch.mm floor: {tf_ / tfl:.1f}× — "
                             "the rest of PyTorch's time is per-step overhead")
        for peer in ("fastckpt", "tf_keras"):
            with_cb, plain = _med(tut, f"{peer}+ModelCheckpoint", "fit_s"), _med(tut, peer, "fit_s")
            if peer == "fastckpt" or (with_cb and plain):
                line = _ratio_line(f"{peer}: fit with ModelCheckpoint every epoch / plain fit", with_cb,
                                   plain, 1.05, higher_is_better=False,
                                   noise=max(_noise(tut, peer), _noise(tut, f"{peer}+ModelCheckpoint")))
                notes.append(line if peer == "fastckpt" else "(context) " + line.split(" (target")[0])
        mem = _memory_note(tut)
        if mem:
            notes.append(mem)
    for name in ("large", "wide"):
        r = by_name.get(name)
        if r:
            notes.append(_ratio_line(f"{name}: fastckpt / PyTorch throughput (samples/s)",
                                     _med(r, "fastckpt", "samples_per_s"), _med(r, "torch", "samples_per_s"),
                                     1.2, noise=max(_noise(r, "fastckpt"), _noise(r, "torch"))))
    for name in ("tabular", "lnmlp"):  # issue 13: fit throughput vs PyTorch eager and tf.keras
        r = by_name.get(name)
        if r:
            fk = _med(r, "fastckpt", "samples_per_s")
            for peer, label, target in (("torch", "PyTorch eager", 3.0), ("tf_keras", "tf.keras", 8.0)):
                notes.append(_ratio_line(f"{name}: fit throughput fastckpt / {label} (samples/s)", fk,
                                         _med(r, peer, "samples_per_s"), target,
                                         noise=max(_noise(r, "fastckpt"), _noise(r, peer))))
            tp, fp = _med(r, "torch", "predict_s"), _med(r, "fastckpt", "predict_s")
            if tp and fp:
                notes.append(f"(context) {name}: predict all rows, PyTorch / fastckpt time: {tp / fp:.2f}×")
    ck = by_name.get("checkpoint")
    if ck:
        fs = _med(ck, "fastckpt", "large_save_gbs")
        notes.append(_ratio_line("checkpoint save (500 MB): fastckpt / raw write throughput", fs,
                                 _med(ck, "raw", "large_save_gbs"), 0.9,
                                 noise=max(_noise(ck, "fastckpt"), _noise(ck, "raw"))))
        notes.append(_ratio_line("checkpoint save (500 MB): fastckpt / tf.train.Checkpoint throughput",
                                 fs, _med(ck, "tf.train.Checkpoint", "large_save_gbs"), 1.5,
                                 noise=max(_noise(ck, "fastckpt"), _noise(ck, "tf.train.Checkpoint"))))
    return notes


def _memory_note(tut):
    """Issue 6: peak RSS of fastckpt's fit within 1.2× of what training needs, plus the baseline.

    Needed = parameters, their gradients and Adam's m and v (4 × 4 bytes per parameter), one
    batch's activations (z, relu output and dropout mask per hidden unit, logits and their
    gradient) and the input arrays. Baseline = RSS after imports and data loading minus the inputs.
    """
    st = tut["cases"].get("fastckpt")
    if not st or st["status"] != "ok" or "rss_base_mb" not in st["summary"]:
        return None
    cfg = tut["config"]
    widths = [cfg["features"], *cfg["hidden"], cfg["classes"]]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    acts = cfg["batch_size"] * (3 * sum(cfg["hidden"]) + 2 * cfg["classes"]) * 4
    rows = cfg["rows"] + cfg["val_rows"] + cfg["pred_rows"]
    inputs = rows * cfg["features"] * 4 + (cfg["rows"] + cfg["val_rows"]) * 4
    mb = 2**20
    base = st["summary"]["rss_base_mb"]["median"] - inputs / mb
    budget = base + 1.2 * (16 * params + acts + inputs) / mb
    peak = st["summary"]["peak_rss_mb"]["median"]
    return (f"fastckpt peak RSS over the tutorial run {peak:.1f} MB vs budget {budget:.1f} MB "
            f"(baseline {base:.1f} MB + 1.2 × {(16 * params + acts + inputs) / mb:.1f} MB of "
            f"weights, grads, Adam slots, one batch's activations, inputs): "
            f"{'met' if peak <= budget else 'NOT met'}")


def write_chart(res, path):
    """One bar group per shown metric (median, whiskers min–max); returns the path or a reason."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib not installed"
    cases = [c for c, st in res["cases"].items() if st["status"] == "ok"]
    metrics = [m for m in _shown(res)  # a metric no case reported (fastckpt's open) gets no panel
               if any(res["cases"][c]["summary"].get(m["key"]) for c in cases)]
    if not metrics or not cases:
        return "skipped: nothing measured"
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes[0], metrics):
        xs, meds, lo, hi, cols = [], [], [], [], []
        for i, c in enumerate(cases):
            s = res["cases"][c]["summary"].get(m["key"])
            if not s:
                continue
            k = m["scale"]
            xs.append(c)
            meds.append(s["median"] * k)
            lo.append((s["median"] - s["min"]) * k)
            hi.append((s["max"] - s["median"]) * k)
            cols.append(colors[i % len(colors)])
        ax.bar(range(len(xs)), meds, yerr=[lo, hi], color=cols, capsize=3)
        top = max(m_ + h for m_, h in zip(meds, hi)) if meds else 0
        if meds and min(meds) > 0 and top / min(meds) > 20:
            ax.set_yscale("log")  # one disturbed run or a 100× gap would flatten every other bar
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right", fontsize=8)
        better = "lower is better" if m["kind"] == "time" else "higher is better"
        ax.set_title(f"{m['label']} ({m['unit']})\n{better}", fontsize=9)
    title = res["title"] + (" [QUICK MODE: tiny sizes]" if res["quick"] else "")
    fig.suptitle(f"{title} — median of {res['repeats']} run(s), whiskers min–max", fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    """``python -m bench.report [DIR]``: re-print the table from the JSON files of a past run."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    ap.add_argument("dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--charts", action="store_true", help="also redraw <workload>.png in DIR")
    args = ap.parse_args(argv)
    order = ("tutorial", "gemm_floor", "blas_peak", "large", "wide", "checkpoint", "tabular", "lnmlp")
    results = []
    for name in order:
        path = os.path.join(args.dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
            if args.charts:
                write_chart(results[-1], os.path.join(args.dir, f"{name}.png"))
    if not results:
        ap.error(f"no results JSON in {args.dir}")
    print(render(results, results[0]["environment"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
