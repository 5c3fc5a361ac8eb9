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


def build(seed: int = 7):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(20,)),
                              keras.layers.Dense(5)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main() -> None:
    mode, workdir = sys.argv[1], sys.argv[2]
    strategy = fastckpt.distribute.MultiWorkerMirroredStrategy()
    rank, n = strategy.cluster_resolver.task_id, strategy.num_replicas_in_sync
    with strategy.scope():
        model = build()
    prefix = os.path.join(workdir, "ckpt")
    result = {"rank": rank, "n": n}
    if mode == "save":
        model.save_weights(prefix)
        result["weights"] = [w.tolist() for w in model.get_weights()]
        result["files"] = sorted(os.listdir(workdir))
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
