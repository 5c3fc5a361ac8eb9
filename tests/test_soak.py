"""SIGKILL soak over every save path, with a litter check after each storm.

A child process saves one model again and again (every weight and optimizer slot set to a value
that encodes the save's generation) and reports each completed save on stdout. The parent kills it
(at random moments, and at moments aimed inside the commit through the FASTCKPT_TEST_PAUSE_AT
hook), then loads what is on disk: it must load, hold exactly one generation, and that generation
must be the last one reported or the one in flight. After each storm one clean save runs and the
directory must hold only that save's files: nothing a killed save left behind survives it.

``FASTCKPT_SOAK=N`` sets the random kills per path (default 6; nightly-size runs use >= 1000).
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

from fastckpt import keras, train

SOAK = int(os.environ.get("FASTCKPT_SOAK", "6"))

CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from fastckpt import keras, train
    mode, target, g, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    model = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(32,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_weights)
    variables = model.weights + model.optimizer.variables[1:]
    if mode == "backup":  # g: epochs to run in all (0: without end), count: 1 = delete when done
        x = np.random.default_rng(0).random((64, 32), dtype=np.float32)
        y = (np.arange(64) % 10).astype(np.int64)

        class Report(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                print("begin", epoch, flush=True)

            def on_epoch_end(self, epoch, logs=None):
                print("end", epoch, flush=True)

        print("ready", flush=True)
        model.fit(x, y, epochs=g or 10**6, batch_size=16, verbose=0, shuffle=False,
                  callbacks=[keras.callbacks.BackupAndRestore(target, delete_checkpoint=bool(count)),
                             Report()])
        raise SystemExit(0)
    if mode == "staged":  # ModelCheckpoint's path: snapshot, then an O_DIRECT commit
        from fastckpt.checkpoint.bundle import StagedBundle
        from fastckpt.saving.weights_io import tf_weight_tensors, write_tf_weights
        staged = StagedBundle()

        def save():
            staged.stage(tf_weight_tensors(model))
            write_tf_weights(target, staged)
    elif mode == "save_weights":
        def save():
            model.save_weights(target)
    elif mode == "manager":
        manager = train.CheckpointManager(train.Checkpoint(model=model, optimizer=model.optimizer),
                                          target, max_to_keep=2)

        def save():
            manager.save(checkpoint_number=g)
    else:  # model.save in the directory, .h5 or .keras format
        def save():
            model.save(target)
    print("ready", flush=True)
    for _ in range(count or 10**9):
        for i, v in enumerate(variables):
            v.value[...] = g + i / 100.0
        model.optimizer.iterations.value[...] = g
        save()
        print(g, flush=True)
        g += 1
""")


def _fresh():
    model = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(32,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_weights)
    return model


def _generation(model) -> int:
    variables = model.weights + model.optimizer.variables[1:]
    assert len(variables) == 12, [v.name for v in variables]
    gens = set()
    for i, v in enumerate(variables):
        assert np.all(v.value == v.value.flat[0]), f"{v.name} holds more than one generation"
        gens.add(round(float(v.value.flat[0]) - i / 100.0))
    gens.add(int(model.optimizer.iterations.value))
    assert len(gens) == 1, f"mixed generations after a kill: {sorted(gens)}"
    return gens.pop()


def _load_generation(mode: str, target: str) -> int:
    if mode in ("save_weights", "staged"):
        model = _fresh()
        model.load_weights(target)
    elif mode == "manager":
        model = _fresh()
        latest = train.latest_checkpoint(target)
        assert latest is not None, os.listdir(target)
        train.Checkpoint(model=model, optimizer=model.optimizer).restore(latest)
    else:
        model = keras.models.load_model(target)
    return _generation(model)


def _expected_files(mode: str, target: str) -> set:
    """What the directory holding ``target`` may contain after a save that ran to completion."""
    base = os.path.basename(target)
    if mode in ("save_weights", "staged"):
        return {"checkpoint", base + ".index", base + ".data-00000-of-00001"}
    if mode == "manager":  # the listed checkpoints and nothing else
        listed = train.CheckpointManager(train.Checkpoint(model=_fresh()), target).checkpoints
        assert 1 <= len(listed) <= 2, listed
        return {"checkpoint"} | {os.path.basename(p) + ext for p in listed
                                 for ext in (".index", ".data-00000-of-00001")}
    return {base}


PATHS = {
    "save_weights": "training/cp.ckpt",
    "staged": "training/cp.ckpt",
    "dir": "models/m",
    "h5": "models/m.h5",
    "keras": "models/m.keras",
    "manager": "managed",
}


def _spawn(mode, target, start, count=0, env=None):
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode, target, str(start), str(count)],
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready"
    return child


def _kill_and_check(child, mode, target, last_done):
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    reported = [int(line) for line in out.split()]
    if reported:
        last_done = reported[-1]
    gen = _load_generation(mode, target)
    assert gen in (last_done, last_done + 1), (gen, last_done)
    return gen


def _first_save(mode, target):
    child = _spawn(mode, target, 0, count=1)
    assert child.stdout.readline().strip() == "0"
    assert child.wait() == 0
    return 0


def _clean_save_and_check_litter(mode, target, last_done):
    """One save run to completion, as the user's next run makes: afterwards the directory holds
    only what that save and its kept predecessors own."""
    child = _spawn(mode, target, last_done + 1, count=1)
    child.communicate()
    assert child.returncode == 0
    assert _load_generation(mode, target) == last_done + 1
    directory = target if mode == "manager" else os.path.dirname(target)
    left = set(os.listdir(directory))
    assert left == _expected_files(mode, target), sorted(left)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(PATHS))
def test_soak_random_kills_leave_one_generation_and_no_litter(tmp_path, mode):
    target = str(tmp_path / PATHS[mode])
    rnd = random.Random(f"soak-{mode}")
    last_done = _first_save(mode, target)
    for _ in range(SOAK):
        child = _spawn(mode, target, last_done + 1)
        time.sleep(rnd.uniform(0.0, 0.1))
        last_done = _kill_and_check(child, mode, target, last_done)
    _clean_save_and_check_litter(mode, target, last_done)


@pytest.mark.slow
def test_soak_backup_and_restore_resumes_after_every_kill(tmp_path):
    backup = str(tmp_path / "backup")
    rnd = random.Random("soak-backup")
    # Epochs known backed up (an epoch's backup commits after every on_epoch_end, so "begin e"
    # proves e-1 is backed up) and possibly backed up (its "end" was reported, its commit may not be).
    sure, maybe = -1, -1
    for _ in range(SOAK):
        child = _spawn("backup", backup, 0)
        first = child.stdout.readline().split()
        assert first[0] == "begin"
        assert sure + 1 <= int(first[1]) <= maybe + 1, (first, sure, maybe)
        time.sleep(rnd.uniform(0.0, 0.2))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        lines = [first] + [line.split() for line in out.splitlines()]
        sure = max([sure] + [int(e) - 1 for what, e in lines if what == "begin"])
        maybe = max([sure, maybe] + [int(e) for what, e in lines if what == "end"])
    # A run that finishes removes the backup entirely, whatever the kills left.
    child = _spawn("backup", backup, maybe + 3, count=1)
    out, _ = child.communicate()
    assert child.returncode == 0, out
    assert not os.path.exists(backup) or os.listdir(backup) == [], os.listdir(backup)
