"""A writer SIGKILLed while it overwrites a checkpoint never loses it, never mixes two saves, and
leaves nothing that the next save does not clean up.

The child saves the tutorial model to the same target again and again, every weight and optimizer
slot set to a value that encodes the generation, and reports each completed save on stdout. After
each kill the parent loads the target into a fresh model: it must load without error, and every
value must belong to one generation — the last reported one or the one in flight — never a mix.

Two kinds of kill:

* aimed: the child runs with ``FASTCKPT_TEST_PAUSE_AT=<step>``; the save stops inside its commit,
  writes ``FASTCKPT_PAUSED <step>`` on stderr and sleeps, and the parent kills it there. These are
  the kills that can catch a broken commit (a random kill almost never lands in a rename window of
  a few microseconds). Each path lists its pause steps in ``PAUSE_STEPS`` with the generation a
  load must see after a kill there; a path whose commit has no hook yet lists none.
* random: the parent kills at a random moment. After each storm one save runs to completion, and
  the directory must then hold only that save's files (``_litter``).

``FASTCKPT_SOAK=N`` sets the random kills per path (default 3, to keep this file within about a
minute on CI; nightly runs use 1000 and more). ``FASTCKPT_TEST_CRASH_AT=dir-<step>`` (exit at the
step) is used by the deterministic crash-point tests at the end.
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

SOAK = int(os.environ.get("FASTCKPT_SOAK", os.environ.get("FASTCKPT_KILL_TESTS", "3")))
PAUSE_TIMEOUT = 60.0

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from fastckpt import keras
    target, g, how, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_weights)
    variables = model.weights + model.optimizer.variables[1:]
    if how == "backup":  # g: epochs in all (0: without end); count 1: delete the backup when done
        x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
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
    if how == "staged":  # ModelCheckpoint's path: snapshot, then an O_DIRECT commit
        from fastckpt.checkpoint.bundle import StagedBundle
        from fastckpt.saving.weights_io import tf_weight_tensors, write_tf_weights
        staged = StagedBundle()

        def save():
            staged.stage(tf_weight_tensors(model))
            write_tf_weights(target, staged)
    elif how == "save_weights":
        def save():
            model.save_weights(target)
    elif how == "manager":
        from fastckpt import train
        manager = train.CheckpointManager(train.Checkpoint(model=model, optimizer=model.optimizer),
                                          target, max_to_keep=2)

        def save():
            manager.save(checkpoint_number=g)
    else:  # model.save: a directory, .h5 or .keras
        if how == "dir-fallback":  # as where renameat2(RENAME_EXCHANGE) is unavailable
            from fastckpt.saving import atomic_dir
            atomic_dir._exchange = lambda a, b: False

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

TARGETS = {"save_weights": "training_1/cp.ckpt", "staged": "training_1/cp.ckpt",
           "dir": "saved_model/m", "dir-fallback": "saved_model/m", "h5": "models/m.h5",
           "keras": "models/m.keras", "manager": "managed"}

# Where a save can be stopped inside its commit, and which generation a load must then see.
# The native commit's steps (csrc/io/commit.h): 1 data temps written, 2 temps durable, 3 journal
# published (from here the new checkpoint is decided), 4 first rename, 5 all renames, 6 stale files
# deleted, 7 journal removed. A manager's new checkpoint counts once its state file lists it, after
# the commit, so there every step leaves the old one.
_NATIVE = {str(k): "old" if k < 3 else "new" for k in range(1, 8)}
PAUSE_STEPS = {
    "save_weights": _NATIVE,
    "staged": _NATIVE,
    "dir": {"dir-built": "old", "dir-exchanged": "new"},
    "dir-fallback": {"dir-built": "old", "dir-moved-aside": "old", "dir-exchanged": "new"},
    "h5": {"file-written": "old", "file-replaced": "new"},
    "keras": {"file-written": "old", "file-replaced": "new"},
    "manager": {str(k): "old" for k in range(1, 8)},
}


def _fresh():
    model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _generation(model) -> int:
    variables = model.weights + model.optimizer.variables[1:]
    assert len(variables) == 12, [v.name for v in variables]
    gens = {round(float(v.value.flat[0]) - i / 100.0) for i, v in enumerate(variables)}
    for v in variables:
        assert np.all(v.value == v.value.flat[0]), f"{v.name} holds more than one generation"
    gens.add(int(model.optimizer.iterations.value))
    assert len(gens) == 1, f"mixed generations after a kill: {sorted(gens)}"
    return gens.pop()


def _load_generation(how, target) -> int:
    if how in ("save_weights", "staged"):
        model = _fresh()
        model.load_weights(target)
        return _generation(model)
    if how == "manager":
        from fastckpt import train
        model = _fresh()
        model.optimizer.build(model.trainable_weights)  # slots to restore into
        latest = train.latest_checkpoint(target)
        assert latest is not None, os.listdir(target)
        train.Checkpoint(model=model, optimizer=model.optimizer).restore(latest)
        return _generation(model)
    return _generation(keras.models.load_model(target))


def _litter(how, target):
    """Entries of the target's directory that a completed save does not own."""
    directory, base = os.path.split(target)
    if how in ("save_weights", "staged"):
        owned = {"checkpoint", base + ".index", base + ".data-00000-of-00001"}
    elif how == "manager":  # the checkpoints its state file lists, and that file
        from fastckpt.checkpoint import state
        directory = target
        listed = state.read_state(target).all_model_checkpoint_paths  # (a manager would sweep)
        assert 1 <= len(listed) <= 2, listed
        owned = {"checkpoint"} | {os.path.basename(p) + ext for p in listed
                                  for ext in (".index", ".data-00000-of-00001")}
    else:
        owned = {base}
    return sorted(set(os.listdir(directory)) - owned)


def _spawn(how, target, start, count=0, pause_at=None):
    env = dict(os.environ)
    env.pop("FASTCKPT_TEST_CRASH_AT", None)
    env.pop("FASTCKPT_TEST_PAUSE_AT", None)
    if pause_at:
        env["FASTCKPT_TEST_PAUSE_AT"] = pause_at
    child = subprocess.Popen([sys.executable, "-c", CHILD, target, str(start), how, str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def _kill(child):
    """SIGKILL a child that must still be running; returns the generations it reported."""
    assert child.poll() is None, f"the saver exited ({child.returncode}) before the kill"
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    return [int(line) for line in out.splitlines(keepends=True) if line.endswith("\n")]


def _wait_paused(child, step):
    """Block until the child reports it stopped at ``step`` (lines on stderr; others ignored)."""
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        if not line:
            break
        if line.split()[:2] == ["FASTCKPT_PAUSED", step]:
            return
    child.kill()
    pytest.fail(f"the saver never paused at {step}: {line!r}")


def _first_save(how, target):
    child = _spawn(how, target, 0, count=1)
    out, err = child.communicate()
    assert child.returncode == 0 and out.split() == ["0"], err
    return 0


def _clean_save_and_check_litter(how, target, last_done):
    """The next save, run to completion, leaves only the files a save owns."""
    child = _spawn(how, target, last_done + 1, count=1)
    out, err = child.communicate()
    assert child.returncode == 0, err
    assert _load_generation(how, target) == last_done + 1
    assert _litter(how, target) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", list(TARGETS))
def test_sigkill_soak_never_loses_or_mixes_and_leaves_no_litter(tmp_path, how):
    target = str(tmp_path / TARGETS[how])
    rnd = random.Random(f"20261122-{how}")
    last_done = _first_save(how, target)

    # Aimed kills: stopped inside the commit, the outcome is known exactly.
    for step, outcome in PAUSE_STEPS[how].items():
        child = _spawn(how, target, last_done + 1, count=1, pause_at=step)
        _wait_paused(child, step)
        assert _kill(child) == []
        gen = _load_generation(how, target)
        assert gen == (last_done if outcome == "old" else last_done + 1), (step, gen, last_done)
        last_done = gen
    if PAUSE_STEPS[how]:
        _clean_save_and_check_litter(how, target, last_done)
        last_done += 1

    # Random kills.
    for _ in range(SOAK):
        child = _spawn(how, target, last_done + 1)
        if rnd.random() < 0.5:  # let a save land first: then the kill finds a warm writer
            last_done = int(child.stdout.readline())
        time.sleep(rnd.uniform(0.0, 0.25))
        reported = _kill(child)
        if reported:
            last_done = reported[-1]
        gen = _load_generation(how, target)
        assert gen in (last_done, last_done + 1), (gen, last_done)
        last_done = gen  # the in-flight save may have committed before the kill
    _clean_save_and_check_litter(how, target, last_done)


@pytest.mark.slow
@pytest.mark.parametrize("how,step", [("dir", s) for s in PAUSE_STEPS["dir"]]
                         + [("dir-fallback", s) for s in PAUSE_STEPS["dir-fallback"]])
def test_model_dir_crash_points(tmp_path, how, step):
    """``model.save`` to a directory stopped (``_exit``) at each step of its commit: the target
    loads as the old or the new model as the step says, and the next save removes what is left."""
    target = str(tmp_path / "saved_model" / "m")
    _first_save(how, target)
    env = dict(os.environ, FASTCKPT_TEST_CRASH_AT=step)
    env.pop("FASTCKPT_TEST_PAUSE_AT", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, target, "1", how, "1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 86, proc.stderr[-2000:]
    expected = 0 if PAUSE_STEPS[how][step] == "old" else 1
    assert _load_generation(how, target) == expected
    assert _litter(how, target) != []  # the crash did leave something behind ...
    _clean_save_and_check_litter(how, target, expected)  # ... which the next save removed


@pytest.mark.slow
def test_sigkill_soak_backup_and_restore_resumes_and_cleans_up(tmp_path):
    """``fit`` with ``BackupAndRestore`` killed at random moments: every restart resumes after an
    epoch that was backed up, and a run that finishes leaves no backup behind."""
    backup = str(tmp_path / "backup")
    rnd = random.Random("20261130-backup")
    # An epoch's backup commits after every on_epoch_end: "begin e" proves e-1 is backed up
    # (sure); an epoch whose "end" was reported may be backed up or not (maybe).
    sure, maybe = -1, -1
    for _ in range(max(SOAK, 2)):
        child = _spawn("backup", backup, 0)
        first = child.stdout.readline().split()
        assert first[0] == "begin", first
        assert sure + 1 <= int(first[1]) <= maybe + 1, (first, sure, maybe)
        time.sleep(rnd.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        # Only whole lines count: the kill may cut the last one short.
        lines = [first] + [line.split() for line in out.splitlines(keepends=True)
                           if line.endswith("\n")]
        sure = max([sure] + [int(e) - 1 for what, e in lines if what == "begin"])
        maybe = max([sure, maybe] + [int(e) for what, e in lines if what == "end"])
    child = _spawn("backup", backup, maybe + 3, count=1)
    out, err = child.communicate()
    assert child.returncode == 0, err
    assert not os.path.exists(backup), os.listdir(backup)
