"""A writer SIGKILLed at random moments while it overwrites one prefix never loses the checkpoint.

The child saves the tutorial model to the same prefix again and again, every weight and optimizer
slot set to a value that encodes the generation, and reports each completed save on stdout. After
each kill the parent loads the prefix into a fresh model: it must load without error, and every
value must belong to one generation — the last reported one or the one in flight — never a mix.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastckpt import keras

KILLS = int(os.environ.get("FASTCKPT_KILL_TESTS", "50"))

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from fastckpt import keras
    prefix = sys.argv[1]
    model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_weights)
    variables = model.weights + model.optimizer.variables[1:]
    g = int(sys.argv[2])
    if sys.argv[3] == "staged":  # ModelCheckpoint's path: snapshot, then an O_DIRECT commit
        from fastckpt.checkpoint.bundle import StagedBundle
        from fastckpt.saving.weights_io import tf_weight_tensors, write_tf_weights
        staged = StagedBundle()

        def save():
            staged.stage(tf_weight_tensors(model))
            write_tf_weights(prefix, staged)
    else:
        def save():
            model.save_weights(prefix)
    print("ready", flush=True)
    while True:
        for i, v in enumerate(variables):
            v.value[...] = g + i / 100.0
        model.optimizer.iterations.value[...] = g
        save()
        print(g, flush=True)
        g += 1
""")


def _fresh():
    model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _generation(model) -> int:
    variables = model.weights + model.optimizer.variables[1:]
    gens = {round(float(v.value.flat[0]) - i / 100.0) for i, v in enumerate(variables)}
    for i, v in enumerate(variables):
        assert np.all(v.value == v.value.flat[0]), f"{v.name} holds more than one generation"
    it = int(model.optimizer.iterations.value)
    gens.add(it)
    assert len(gens) == 1, f"mixed generations after a kill: {sorted(gens)}"
    return gens.pop()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["save_weights", "staged"])
def test_sigkill_during_overwrite_never_loses_or_mixes(tmp_path, how):
    prefix = str(tmp_path / "training_1" / "cp.ckpt")
    rnd = random.Random(20261122)
    last_done = None
    kills = 0
    while kills < KILLS:
        start = 0 if last_done is None else last_done + 1
        child = subprocess.Popen([sys.executable, "-c", CHILD, prefix, str(start), how],
                                 stdout=subprocess.PIPE, text=True, cwd=str(tmp_path))
        assert child.stdout.readline().strip() == "ready"
        if last_done is None:  # let the first save land so there is something to keep
            last_done = int(child.stdout.readline())
        time.sleep(rnd.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        reported = [int(line) for line in out.split()]
        if reported:
            last_done = reported[-1]
        kills += 1
        model = _fresh()
        model.load_weights(prefix)
        gen = _generation(model)
        assert gen in (last_done, last_done + 1), (gen, last_done)
        if gen == last_done + 1:  # the in-flight save had committed before the kill
            last_done = gen
    assert kills >= KILLS
