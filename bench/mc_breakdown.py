"""Where ``ModelCheckpoint``'s cost goes in the tutorial fit: ``python bench/mc_breakdown.py``.

The harness's ``fastckpt+ModelCheckpoint`` row gives one ratio; this splits it. In one process it
alternates plain fits and fits with the tutorial's callback (fresh model each, 10 epochs of
1000×784, batch 32, validation on 1000 rows) and reports, as medians over the rounds:

* the fit time of both and their ratio;
* the epoch itself (``on_epoch_begin`` → ``on_epoch_end``): what the background writer costs the
  training threads it shares the cores with;
* the main thread's time inside the callback per save (snapshot of weights + Adam slots);
* the writer's wall and CPU time per save (``StagedBundle.write`` + state file, on the worker).

``--threads N`` sets fastckpt's compute threads (``FASTCKPT_NUM_THREADS``): on this 2-core VM,
``--threads 1`` leaves a core to the writer. A diagnostic, not a target check (``bench.run`` is).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="pairs of fits (default 6)")
    ap.add_argument("--threads", type=int, default=0, help="fastckpt compute threads (0: default)")
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

    def fit(with_callback: bool):
        model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                                  keras.layers.Dropout(0.2), keras.layers.Dense(10)])
        model.compile(optimizer="adam", metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = EpochClock()
        callbacks = [clock]
        if with_callback:
            callbacks.append(ModelCheckpoint(os.path.join(workdir, "cp.ckpt"), save_weights_only=True))
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

    rows = {False: [], True: []}
    try:
        for r in range(args.rounds):
            for with_cb in ((False, True) if r % 2 == 0 else (True, False)):
                rows[with_cb].append(fit(with_cb))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for owner, name, inner in restore:
            setattr(owner, name, inner)

    def med(values):
        return statistics.median(values) * 1e3

    plain, mc = rows[False], rows[True]
    fit_p, fit_m = med([r[0] for r in plain]), med([r[0] for r in mc])
    ep_p, ep_m = med([r[1] for r in plain]), med([r[1] for r in mc])
    saver = [t for r in mc for t in r[2]["saver"]]
    writer = [t for r in mc for t in r[2]["writer"]]
    print(f"fastckpt {fastckpt.__version__}, {fastckpt.get_num_threads()} compute thread(s), "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds, medians")
    print(f"fit 10 epochs            plain {fit_p:7.1f} ms   with ModelCheckpoint {fit_m:7.1f} ms"
          f"   ratio {fit_m / fit_p:.3f}")
    print(f"epoch (begin -> end)     plain {ep_p:7.2f} ms   with ModelCheckpoint {ep_m:7.2f} ms"
          f"   ratio {ep_m / ep_p:.3f}")
    print(f"callback, main thread    {med([w for w, _ in saver]):.3f} ms per save "
          f"({med([w for w, _ in saver]) / ep_p * 100:.1f} % of a plain epoch)")
    per_save = len(writer) // max(1, len(saver))  # write + state file per save
    wall = [sum(w for w, _ in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
    cpu = [sum(c for _, c in writer[i:i + per_save]) for i in range(0, len(writer), per_save)]
    print(f"writer (worker thread)   {med(wall):.3f} ms wall, {med(cpu):.3f} ms CPU per save")
    return 0


if __name__ == "__main__":
    sys.exit(main())
