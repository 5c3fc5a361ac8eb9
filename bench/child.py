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


def main(argv) -> int:
    _fix_path()
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
    sys.stdout.write("\n" + MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
