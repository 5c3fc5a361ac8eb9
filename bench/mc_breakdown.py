"""Where ``ModelCheckpoint``'s cost goes in the tutorial fit: ``python bench/mc_breakdown.py``.

The harness's ``fastckpt+ModelCheckpoint`` row gives one ratio; this splits it. In one process it
alternates plain fits and fits with the tutorial's callback (fresh model each, 10 epochs of
1000×784, batch 32, validation on 1000 rows) in up to seven variants: today's copy snapshot with a
normal-priority writer, the idle-priority writer alone, the snapshot fused into the last
optimizer step alone, both, and the kernels on one thread fewer while the writer writes
(``yield_compute_thread``: while it computes, not while it waits in fsync or an O_DIRECT
write) alone, with the idle writer, and with the fused snapshot; it reports, as medians over
the rounds:

* the fit time of both and their ratio, and the "paired" ratio (median over rounds of the
  case's fit over the plain fit of the same round: steadier when the load drifts);
* the epoch itself (``on_epoch_begin`` → ``on_epoch_end``, the save's main-thread part
  included): what the snapshot and the background writer cost the training threads;
* the main thread's time inside the callback per save (snapshot of weights + Adam slots);
* the writer's wall and CPU time per save (``StagedBundle.write`` + state file, on the worker).

``--threads N`` sets fastckpt's compute threads (``FASTCKPT_NUM_THREADS``): on this 2-core VM,
``--threads 1`` leaves a core to the writer. The OpenMP wait policy is read once per process:
run the script again with ``OMP_WAIT_POLICY=passive`` (or ``GOMP_SPINCOUNT=...``) in the
environment to compare it (the header names both). A diagnostic, not a target check (``bench.run`` is).

The table for the decision, on a quiet machine::

    python bench/mc_breakdown.py --rounds 7   # today, yield thread, idle+yield, fused+yield
    OMP_WAIT_POLICY=passive python bench/mc_breakdown.py --rounds 7 --cases "today,idle writer,idle+yield"
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


# The cases still open (idle writer, fused snapshot and both were measured and left off).
DEFAULT_CASES = ("today", "yield thread", "idle+yield", "fused+yield")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="pairs of fits (default 6)")
    ap.add_argument("--threads", type=int, default=0, help="fastckpt compute threads (0: default)")
    ap.add_argument("--cases", default="", help="comma-separated subset of: today, idle writer, "
                    "fused snapshot, both, yield thread, idle+yield, fused+yield, or all "
                    f"(default: {', '.join(DEFAULT_CASES)})")
    ap.add_argument("--dir", default=None, help="directory for the checkpoints (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["FASTCKPT_NUM_THREADS"] = str(args.threads)

    import numpy as np

    import fastckpt
    from fastckpt import keras
    from fastckpt.callbacks.callback import Callback
    from fastckpt.callbacks.model_checkpoint import ModelCheckpoint
    from fastckpt.checkpoint import bundle, state

    timings = {"writer": [], "saver": []}

    def timed(owner, name, key):
        inner = getattr(owner, name)

        def wrapper(*a, **k):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                timings[key].append((time.perf_counter() - t, time.thread_time() - c))
        setattr(owner, name, wrapper)
        return inner

    restore = [(bundle.StagedBundle, "write", timed(bundle.StagedBundle, "write", "writer")),
               (state, "write_state", timed(state, "write_state", "writer")),
               (ModelCheckpoint, "on_epoch_end", timed(ModelCheckpoint, "on_epoch_end", "saver"))]

    class EpochClock(Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self._t = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self._t)

    rng = np.random.default_rng(1234)
    x, y = rng.random((1000, 784), dtype=np.float32), rng.integers(0, 10, 1000).astype(np.int32)
    xv, yv = rng.random((1000, 784), dtype=np.float32), rng.integers(0, 10, 1000).astype(np.int32)
    workdir = tempfile.mkdtemp(prefix="mc_breakdown_", dir=args.dir)

    # (writer_priority, fused_snapshot, yield_compute_thread) of each ModelCheckpoint case;
    # "plain" has no callback.
    cases = {"plain": None, "today": ("normal", False, False), "idle writer": ("idle", False, False),
             "fused snapshot": ("normal", True, False), "both": ("idle", True, False),
             "yield thread": ("normal", False, True), "idle+yield": ("idle", False, True),
             "fused+yield": ("normal", True, True)}
    wanted = (args.cases or ",".join(DEFAULT_CASES)).split(",")
    if "all" not in wanted:
        unknown = [k for k in wanted if k not in cases]
        if unknown:
            ap.error(f"unknown case(s) {unknown}; choose from {list(cases)[1:]} or all")
        cases = {k: v for k, v in cases.items() if k == "plain" or k in wanted}

    def fit(case):
        model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                                  keras.layers.Dropout(0.2), keras.layers.Dense(10)])
        model.compile(optimizer="adam", metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = EpochClock()
        callbacks = []
        if cases[case] is not None:
            (ModelCheckpoint.writer_priority, ModelCheckpoint.fused_snapshot,
             ModelCheckpoint.yield_compute_thread) = cases[case]
            callbacks.append(ModelCheckpoint(os.path.join(workdir, "cp.ckpt"), save_weights_only=True))
        # After the checkpoint: a callback before it with an on_epoch_end of its own would make
        # it take the copy snapshot (it cannot know that the hook leaves the weights alone).
        callbacks.append(clock)
        model.fit(x[:80], y[:80], batch_size=32, epochs=1, validation_data=(xv[:80], yv[:80]),
                  verbose=0, callbacks=callbacks)  # warm-up, untimed
        clock.epochs.clear()
        for v in timings.values():
            v.clear()
        t = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=10, validation_data=(xv, yv), verbose=0,
                  callbacks=callbacks)
        total = time.perf_counter() - t
        return total, statistics.median(clock.epochs), {k: list(v) for k, v in timings.items()}

    names = list(cases)
    rows = {k: [] for k in names}
    defaults = (ModelCheckpoint.writer_priority, ModelCheckpoint.fused_snapshot,
                ModelCheckpoint.yield_compute_thread)
    try:
        for r in range(args.rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                rows[k].append(fit(k))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for owner, name, inner in restore:
            setattr(owner, name, inner)
        (ModelCheckpoint.writer_priority, ModelCheckpoint.fused_snapshot,
         ModelCheckpoint.yield_compute_thread) = defaults

    def med(values):
        return statistics.median(values) * 1e3

    plain = rows["plain"]
    fit_p, ep_p = med([r[0] for r in plain]), med([r[1] for r in plain])
    print(f"load average at the end {os.getloadavg()[0]:.1f} (a quiet machine: below 0.5 + "
          f"these fits' own threads)")
    print(f"fastckpt {fastckpt.__version__}, {fastckpt.get_num_threads()} compute thread(s), "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds, medians, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}")
    first = names[1]  # today's figures (or the first case asked for), in the long form
    mc = rows[first]
    fit_m, ep_m = med([r[0] for r in mc]), med([r[1] for r in mc])
    saver = [t for r in mc for t in r[2]["saver"]]
    writer = [t for r in mc for t in r[2]["writer"]]
    per_save = max(1, len(writer) // max(1, len(saver)))
    wall = [sum(w for w, _ in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
    cpu = [sum(c for _, c in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
    print(f"ModelCheckpoint case: {first}")
    print(f"fit 10 epochs            plain {fit_p:7.1f} ms   with ModelCheckpoint {fit_m:7.1f} ms"
          f"   ratio {fit_m / fit_p:.3f}")
    print(f"epoch (begin -> end)     plain {ep_p:7.2f} ms   with ModelCheckpoint {ep_m:7.2f} ms"
          f"   ratio {ep_m / ep_p:.3f}")
    print(f"callback, main thread    {med([w for w, _ in saver]):.3f} ms per save "
          f"({med([w for w, _ in saver]) / ep_p * 100:.1f} % of a plain epoch)")
    print(f"writer (worker thread)   {med(wall):.3f} ms wall, {med(cpu):.3f} ms CPU per save")
    print()
    print(f"{'case':16s} {'fit ms':>8s} {'ratio':>6s} {'paired':>6s} {'epoch ms':>9s} {'ratio':>6s} "
          f"{'save ms':>8s} {'writer wall':>11s} {'writer CPU':>10s}")
    print(f"{'plain':16s} {fit_p:8.1f} {1:6.3f} {1:6.3f} {ep_p:9.2f} {1:6.3f}")
    for k in names[1:]:
        mc = rows[k]
        fit_m, ep_m = med([r[0] for r in mc]), med([r[1] for r in mc])
        saver = [t for r in mc for t in r[2]["saver"]]
        writer = [t for r in mc for t in r[2]["writer"]]
        per_save = max(1, len(writer) // max(1, len(saver)))  # write + state file per save
        wall = [sum(w for w, _ in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
        cpu = [sum(c for _, c in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
        # Each case's fit over the plain fit of the same round (run next to it): less exposed
        # to a load that changes during the run than the ratio of the medians.
        paired = statistics.median(c[0] / p[0] for c, p in zip(mc, plain))
        print(f"{k:16s} {fit_m:8.1f} {fit_m / fit_p:6.3f} {paired:6.3f} {ep_m:9.2f} {ep_m / ep_p:6.3f} "
              f"{med([w for w, _ in saver]):8.3f} {med(wall):11.3f} {med(cpu):10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
