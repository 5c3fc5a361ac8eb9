"""One measurement in a fresh interpreter: ``python bench/child.py SPEC.json`` (the runner starts it).

The runner starts one child per (case, repeat) so that no framework shares a process with another
(TensorFlow and PyTorch in one process fight over threads and allocators) and every run starts from
the same cold-but-imported state. The child prints exactly one line starting with ``BENCH_RESULT``
followed by JSON; everything else on stdout/stderr is the libraries' chatter and is ignored.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback

MARK = "BENCH_RESULT "


def _fix_path() -> None:
    # Run as a script, sys.path[0] is bench/ itself: drop it so none of our file names can shadow a
    # library module, and *append* the repository root so ``bench`` imports while an installed
    # ``fastckpt`` still wins over the root's uncompiled ``fastckpt/`` source folder.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.append(os.environ.get("BENCH_ROOT") or os.path.dirname(here))
    pinned = os.environ.get("BENCH_FASTCKPT_PATH")
    if pinned:
        # ``--fastckpt-path``: a fixed build (pip install --target) instead of the installed one.
        # An editable install's redirecting finder sits in sys.meta_path ahead of sys.path, so it
        # has to go, or it would keep serving a working tree that may change during the run.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
        sys.path.insert(0, pinned)


def probe() -> dict:
    """Which fastckpt a child imports, its build, and the source revision (for the results)."""
    import subprocess

    import fastckpt
    import fastckpt.ops as ops

    info = dict(ops.build_info())
    info["file"] = fastckpt.__file__
    src = os.path.dirname(os.path.dirname(fastckpt.__file__))
    marker = os.path.join(src, "BENCH_SOURCE")  # written next to a pinned build by the README recipe
    if os.path.exists(marker):
        with open(marker) as f:
            info["source"] = "pinned build of " + f.read().strip()
        return info
    git = lambda *a: subprocess.run(["git", "-C", src, *a], capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    rev = git("log", "-1", "--format=%h")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    info["source"] = (f"{src} @ {rev}" + (" + UNCOMMITTED changes" if dirty else "")) if rev else src
    return info


def main(argv) -> int:
    _fix_path()
    if argv[1] == "--probe":
        print(MARK + json.dumps(probe()))
        return 0
    with open(argv[1]) as f:
        spec = json.load(f)
    from bench.workloads.base import Unavailable, rss_mb

    out = {"case": spec["case"]}
    t0 = time.perf_counter()
    try:
        mod_name, fn_name = spec["target"].split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        out["metrics"] = fn(spec["cfg"], spec["data"], spec["params"])
        out["status"] = "ok"
    except Unavailable as e:
        out["status"], out["note"] = "skipped", str(e)
    except Exception as e:  # reported, not raised: one broken peer must not sink the whole run
        out["status"], out["note"] = "error", f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    out["child_wall_s"] = time.perf_counter() - t0
    out["rss_end_mb"] = rss_mb()
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # This process's own peak: ru_maxrss also holds the harness's RSS when it spawned the child
    # (Linux carries the spawning process's peak across exec); VmHWM starts again at exec.
    try:
        with open("/proc/self/status") as f:
            out["vm_hwm_mb"] = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration, ValueError):
        pass
    sys.stdout.write("\n" + MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
