"""Run by tests/test_distribute.py under ``mpiexec -n N``: one mode per test (argv[1]).

Every rank builds the same model inside ``MultiWorkerMirroredStrategy().scope()`` and acts; rank 0
reports what it saw as one JSON line prefixed ``RESULT`` on stdout.
"""

import json
import os
import sys

import numpy as np

import fastckpt
from fastckpt import keras


def build(seed: int = 7, dropout: float = 0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(64, activation="relu", input_shape=(20,))]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(5))
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def build_graph(seed: int = 7):
    """A graph whose gradients complete out of layer order: a layer used twice (complete only
    after its last use), a nested model, two branches, and regularized weights."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(20,))
    shared = keras.layers.Dense(20, activation="tanh", name="shared",
                                kernel_regularizer=keras.regularizers.l2(1e-2))
    h = shared(keras.layers.Dense(20, activation="relu", name="first")(inp))
    h = shared(keras.layers.Dense(20, activation="relu", name="middle")(h))
    inner = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(20,)),
                              keras.layers.Dense(8)], name="inner")
    side = keras.layers.Dense(8, name="side", bias_regularizer=keras.regularizers.l1(1e-2))(inp)
    out = keras.layers.Dense(5, name="out")(keras.layers.Add()([inner(h), side]))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def data(n=230):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 20)).astype(np.float32)
    y = (np.abs(x[:, :5]).argmax(axis=1)).astype(np.int32)
    return x, y


def main() -> None:
    mode, workdir = sys.argv[1], sys.argv[2]
    if mode == "late-strategy":
        build()
        try:
            fastckpt.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            if os.environ.get("PMI_RANK", "0") == "0":
                print("RESULT " + json.dumps({"raised": str(e)}), flush=True)
        return
    strategy = fastckpt.distribute.MultiWorkerMirroredStrategy()
    rank, n = strategy.cluster_resolver.task_id, strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_graph() if mode == "fit-graph" else \
            build(dropout=0.3 if mode in ("fit", "fit-backup", "fit-gen") else 0.0)
    prefix = os.path.join(workdir, "ckpt")
    result = {"rank": rank, "n": n}
    if mode == "fit":
        # A global batch of 50 on 230 rows: not divisible by 3, a short last batch of 30.
        x, y = data()
        history = model.fit(x, y, batch_size=50, epochs=3, verbose=1, validation_split=0.2)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["history"] = history.history
        result["evaluate"] = model.evaluate(x, y, batch_size=64, verbose=0)
        result["predict"] = model.predict(x[:37], batch_size=16, verbose=0).tolist()
        everyone = strategy.allgather(result["predict"])
        result["same_predict_everywhere"] = all(p == everyone[0] for p in everyone)
    elif mode == "fit-graph":
        x, y = data()
        history = model.fit(x, y, batch_size=50, epochs=3, verbose=0)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["history"] = history.history
        result["buckets"] = getattr(strategy, "_gradient_stats", {}).get("buckets", 0)
    elif mode == "fit-gen":
        # A shuffled Sequence (with a Sequence for validation), then a generator whose batches
        # (47 rows) divide by neither 2 nor 3: every rank draws the same global batches.
        x, y = data()

        class Batches(keras.utils.Sequence):
            def __init__(self, lo, hi, size):
                super().__init__()
                self.lo, self.hi, self.size = lo, hi, size

            def __len__(self):
                return -(-(self.hi - self.lo) // self.size)

            def __getitem__(self, i):
                a = self.lo + i * self.size
                b = min(self.hi, a + self.size)
                return x[a:b], y[a:b]

        def batches():
            while True:
                for a in range(0, 230, 47):
                    yield x[a:a + 47], y[a:a + 47]

        h1 = model.fit(Batches(0, 190, 45), epochs=2, shuffle=True, verbose=0,
                       validation_data=Batches(190, 230, 15))
        h2 = model.fit(batches(), steps_per_epoch=5, epochs=2, verbose=0)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["history"] = {**{"seq_" + k: v for k, v in h1.history.items()},
                             **{"gen_" + k: v for k, v in h2.history.items()}}
        result["evaluate"] = model.evaluate(Batches(0, 230, 47), verbose=0)
    elif mode == "fit-backup":
        # 4 epochs with a backup, a checkpoint each epoch and a CSV log; FASTCKPT_TEST_KILL_AT=
        # "epoch,batch" SIGKILLs the last rank there (mid-epoch). Run again, it resumes.
        x, y = data()
        kill = os.environ.get("FASTCKPT_TEST_KILL_AT")
        callbacks = [
            keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
            keras.callbacks.ModelCheckpoint(os.path.join(workdir, "ckpt-{epoch}"),
                                            save_weights_only=True),
            keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv")),
        ]
        if kill and rank == n - 1:
            k_epoch, k_batch = (int(v) for v in kill.split(","))

            def maybe_die(batch, logs, state={"epoch": 0}):
                if state["epoch"] == k_epoch and batch == k_batch:
                    os.kill(os.getpid(), 9)

            def note_epoch(epoch, logs, state=maybe_die.__defaults__[0]):
                state["epoch"] = epoch

            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_begin=note_epoch,
                                                            on_train_batch_end=maybe_die))
        model.fit(x, y, batch_size=40, epochs=4, verbose=0, callbacks=callbacks)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["files"] = sorted(os.listdir(workdir))
    elif mode == "different-models":
        with strategy.scope():
            keras.utils.set_random_seed(1)
            other = keras.Sequential([keras.layers.Dense(64 + rank, input_shape=(20,)),
                                      keras.layers.Dense(5)])
            other.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x, y = data()
        try:
            other.fit(x, y, epochs=1, verbose=0)
            result["raised"] = None
        except ValueError as e:
            result["raised"] = str(e)
    elif mode == "save":
        model.save_weights(prefix)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["files"] = sorted(os.listdir(workdir))
    elif mode == "save-dir":
        model.save(os.path.join(workdir, "model"))
        model.save(os.path.join(workdir, "model"))  # a second save replaces the first
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["files"] = sorted(os.listdir(os.path.join(workdir, "model", "variables")))
        result["entries"] = sorted(os.listdir(workdir))
    elif mode == "save-dir-fail":
        # The second model.save fails on the last rank's shard: every rank raises, the first
        # directory stays, no temp directory is left.
        model.save(os.path.join(workdir, "model"))
        result["weights"] = [w.tolist() for w in model.get_weights()]
        for w in model.weights:
            w.assign(np.full(w.shape, 3.0, w.dtype))
        if rank == n - 1:
            os.environ["FASTCKPT_TEST_FAIL_AT"] = "collective-shard-write"
        try:
            model.save(os.path.join(workdir, "model"))
            result["raised"] = None
        except OSError as e:
            result["raised"] = str(e)
        result["entries"] = sorted(os.listdir(workdir))
    elif mode == "kill-after-shard":
        # A first checkpoint, then a second save during which the last rank dies after writing
        # its shard: the job must end, and the first checkpoint stay loadable.
        model.save_weights(prefix)
        for w in model.weights:
            w.assign(np.full(w.shape, 3.0, w.dtype))
        if rank == n - 1:
            os.environ["FASTCKPT_TEST_CRASH_AT"] = "collective-shard-written"
        model.save_weights(prefix)
        result["survived"] = True
    elif mode == "fail-on-one-rank":
        # One rank cannot write (its shard's temp name is taken by a directory): every rank gets
        # the error, nothing is committed, no temp is left.
        model.save_weights(prefix)
        if rank == n - 1:
            os.environ["FASTCKPT_TEST_FAIL_AT"] = "collective-shard-write"
        try:
            model.save_weights(prefix)
            result["raised"] = None
        except OSError as e:
            result["raised"] = str(e)
        result["files"] = sorted(os.listdir(workdir))
    else:
        raise SystemExit(f"unknown mode {mode}")
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
