"""What retention may delete, what killed saves and deletes leave, and the state file's parser.

ModelCheckpoint's ledger and CheckpointManager's state file are notes on disk that anyone who can
write the directory can forge: deleting must be limited to the files the callback or manager
writes itself. BackupAndRestore's deletion after a completed fit must leave, when interrupted at
any step, a directory the next fit recovers from.
"""

import json
import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastckpt
from fastckpt import keras
from fastckpt.checkpoint import state as state_mod
from fastckpt.errors import CorruptCheckpointError


def model():
    m = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                          keras.layers.Dense(2)])
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


#: The shape of the ``xy`` fixture (conftest.py): samples, features, classes.
XY = (16, 3, 2)


def plant_victims(root):
    """A directory and files that nothing in fastckpt may delete; returns {path: bytes}."""
    vdir = root / "victim_dir"
    vdir.mkdir()
    (vdir / "precious.txt").write_bytes(b"dir content")
    files = {str(vdir / "precious.txt"): b"dir content"}
    for name in ("victim_file", "victim_file.index", "victim_file.h5"):
        (root / name).write_bytes(name.encode())
        files[str(root / name)] = name.encode()
    return files


def assert_alive(victims):
    for path, data in victims.items():
        with open(path, "rb") as f:
            assert f.read() == data, path


def messages(record):
    return [str(w.message) for w in record]


# --- ModelCheckpoint: the ledger names what may go, the template limits it ----------------------

def test_model_checkpoint_ledger_cannot_delete_outside_its_own_checkpoints(tmp_path, xy):
    victims = plant_victims(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    # Names the template gives, but symbolic links to the victims.
    os.symlink(tmp_path / "victim_file.index", run / "cp-98.ckpt.index")
    os.symlink(tmp_path / "victim_file", run / "cp-98.ckpt.data-00000-of-00001")
    ledger = run / ".cp-.fastckpt-keep.json"
    hostile = [str(tmp_path / "victim_dir"), str(tmp_path / "victim_file"), str(tmp_path / "victim_file.index"),
               str(run / ".." / "victim_file"), "../victim_file", str(run / "cp-98.ckpt"),
               str(run / "cp-1.ckpt" / ".." / ".." / "victim_file"), str(tmp_path / "victim_dir" / "cp-1.ckpt")]
    ledger.write_text(json.dumps({"written": [{"path": p, "value": None} for p in hostile]}))
    cb = keras.callbacks.ModelCheckpoint(str(run / "cp-{epoch}.ckpt"), save_weights_only=True, max_to_keep=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model().fit(*xy, epochs=3, verbose=0, callbacks=[cb])
    assert_alive(victims)
    assert os.path.islink(run / "cp-98.ckpt.index")
    text = messages(record)
    for p in hostile:  # each entry ignored with a warning naming it and the ledger
        assert any(repr(p) in m and str(ledger) in m for m in text), p
    # Its own retention still works: only the newest of its own checkpoints is left.
    assert sorted(n for n in os.listdir(run) if n.endswith(".index")) == ["cp-3.ckpt.index", "cp-98.ckpt.index"]
    assert [e["path"] for e in json.loads(ledger.read_text())["written"]] == [str(run / "cp-3.ckpt")]


def test_model_checkpoint_a_damaged_old_checkpoint_does_not_stop_training(tmp_path, xy):
    run = tmp_path / "run"
    model().save_weights(str(run / "cp-7.ckpt"))
    (run / "cp-7.ckpt.fastckpt-commit").write_bytes(b"not a journal")
    (run / ".cp-.fastckpt-keep.json").write_text(json.dumps({"written": [{"path": str(run / "cp-7.ckpt")}]}))
    cb = keras.callbacks.ModelCheckpoint(str(run / "cp-{epoch}.ckpt"), save_weights_only=True, max_to_keep=1)
    with pytest.warns(UserWarning, match="could not delete the old checkpoint .*cp-7.ckpt"):
        hist = model().fit(*xy, epochs=2, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 2 and os.path.exists(run / "cp-2.ckpt.index")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_model_checkpoint_ledger_h5_entries_must_be_regular_files(tmp_path, xy, kind):
    victims = plant_victims(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / ("victim_file.h5" if kind == "file" else "victim_dir")
    os.symlink(target, run / "w-97.h5")  # a template name, linked to a victim
    ledger = run / ".w-.fastckpt-keep.json"
    ledger.write_text(json.dumps({"written": [{"path": str(run / "w-97.h5"), "value": None}]}))
    cb = keras.callbacks.ModelCheckpoint(str(run / "w-{epoch}.h5"), save_weights_only=True, max_to_keep=1)
    with pytest.warns(UserWarning, match="w-97.h5.*not a regular file"):
        model().fit(*xy, epochs=2, verbose=0, callbacks=[cb])
    assert_alive(victims)
    assert sorted(os.listdir(run)) == [".w-.fastckpt-keep.json", "w-2.h5", "w-97.h5"]


def test_model_checkpoint_template_directory_fields_do_not_follow_symlinks(tmp_path, xy):
    """With ``{epoch}`` in a directory name, a planted symlink under such a name does not lead
    retention into another directory."""
    elsewhere = tmp_path / "elsewhere"
    m = model()
    m.save_weights(str(elsewhere / "cp.ckpt"))  # a real checkpoint, not this callback's
    victims = {str(p): p.read_bytes() for p in elsewhere.iterdir()}
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(elsewhere, run / "evil")
    ledger = run / ".cp.ckpt.fastckpt-keep.json"
    ledger.write_text(json.dumps({"written": [{"path": str(run / "evil" / "cp.ckpt"), "value": None}]}))
    cb = keras.callbacks.ModelCheckpoint(str(run / "{epoch}" / "cp.ckpt"), save_weights_only=True,
                                         max_to_keep=1)
    with pytest.warns(UserWarning, match="symbolic link"):
        m.fit(*xy, epochs=2, verbose=0, callbacks=[cb])
    assert_alive(victims)
    assert not os.path.exists(run / "1" / "cp.ckpt.index") and os.path.exists(run / "2" / "cp.ckpt.index")


def test_model_checkpoint_whole_model_retention_deletes_its_own_files_only(tmp_path, xy):
    run = tmp_path / "run"
    cb = keras.callbacks.ModelCheckpoint(str(run / "m-{epoch}"), max_to_keep=1)  # model directories
    m = model()
    m.fit(*xy, epochs=2, verbose=0, callbacks=[cb])
    assert sorted(os.listdir(run)) == [".m-.fastckpt-keep.json", "m-2"]
    # A directory under a template name that is not a model directory is left with a warning.
    (run / "m-1").mkdir()
    (run / "m-1" / "notes.txt").write_text("mine")
    ledger = run / ".m-.fastckpt-keep.json"
    ledger.write_text(json.dumps({"written": [{"path": str(run / p), "value": None} for p in ("m-1", "m-2")]}))
    with pytest.warns(UserWarning, match="m-1.*not a model directory"):
        m.fit(*xy, epochs=4, initial_epoch=2, verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(str(run / "m-{epoch}"), max_to_keep=1)])
    assert (run / "m-1" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(run)) == [".m-.fastckpt-keep.json", "m-1", "m-4"]


# --- CheckpointManager: the state file names what it keeps, never what it may delete elsewhere ---

def test_manager_never_deletes_what_its_state_file_names_outside_its_directory(tmp_path):
    m = model()
    ckpt = fastckpt.train.Checkpoint(model=m)
    victim = tmp_path / "victim"
    for i in (1, 2, 3):
        ckpt.write(str(victim / f"ckpt-{i}"))
    ckpt.write(str(tmp_path / "mgr" / "precious"))  # in its directory, but not one of its names
    victims = {str(p): p.read_bytes() for d in (victim, tmp_path / "mgr") for p in d.iterdir() if p.is_file()}
    os.symlink(victim, tmp_path / "mgr" / "sub")
    state_path = tmp_path / "mgr" / "checkpoint"
    hostile = ["../victim/ckpt-1", str(victim / "ckpt-2"), "sub/ckpt-3", "precious"]
    state_path.write_text("".join(f'all_model_checkpoint_paths: "{p}"\n' for p in hostile)
                          + 'model_checkpoint_path: "../victim/ckpt-2"\n')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mgr = fastckpt.train.CheckpointManager(ckpt, str(tmp_path / "mgr"), max_to_keep=1)
        latest = mgr.latest_checkpoint
        for _ in range(3):
            mgr.save()
    assert_alive(victims)
    assert latest is None and [os.path.basename(p) for p in mgr.checkpoints] == ["ckpt-3"]
    text = messages(record)
    for p in hostile:  # each entry ignored with a warning naming it and the state file
        assert any(repr(p) in m and str(state_path) in m for m in text), p


def test_manager_sweeps_its_own_litter_and_nothing_else(tmp_path, monkeypatch):
    m = model()
    ckpt = fastckpt.train.Checkpoint(model=m)
    d = tmp_path / "mgr"
    mgr = fastckpt.train.CheckpointManager(ckpt, str(d), max_to_keep=2)
    for _ in range(3):
        mgr.save()
    data = (d / "ckpt-3.data-00000-of-00001").read_bytes()
    # A kill inside a delete: shards (and temps) whose index is gone.
    (d / "ckpt-1.data-00000-of-00001").write_bytes(data)
    (d / "ckpt-1.index.tmp-0123456789abcdef").write_bytes(b"x")
    # Dead temps of a listed checkpoint.
    (d / "ckpt-3.data-00000-of-00001.tmp-00000000000000ff").write_bytes(b"x")
    # A kill between commit and state-file update: a committed checkpoint no one lists.
    monkeypatch.setattr(state_mod, "write_state", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        mgr.save()
    monkeypatch.undo()
    assert os.path.exists(d / "ckpt-4.index")
    # Not its own: other names, other suffixes, temps not of its form.
    others = ["ckpt-x.index", "other-1.index", "ckptt-1.index", "ckpt-1.index.tmp-NOTHEX0123456789",
              "ckpt-1.data-00000-of-00001.bak", "ckpt-1.index.tmp-0123", "ckpt-1", "ckpt-1.txt", "notes"]
    for name in others:
        (d / name).write_bytes(b"keep me")
    before = sorted(os.listdir(d))
    mgr2 = fastckpt.train.CheckpointManager(fastckpt.train.Checkpoint(model=model()), str(d), max_to_keep=2)
    assert [os.path.basename(p) for p in mgr2.checkpoints] == ["ckpt-2", "ckpt-3"]
    left = sorted(os.listdir(d))
    assert left == sorted(others + ["checkpoint", "ckpt-2.index", "ckpt-2.data-00000-of-00001",
                                    "ckpt-3.index", "ckpt-3.data-00000-of-00001"]), (before, left)
    assert mgr2.restore_or_initialize() == str(d / "ckpt-3")
    # Saving sweeps too (litter made while this manager lives).
    (d / "ckpt-9.data-00000-of-00001").write_bytes(data)
    mgr2.save(checkpoint_number=10)
    assert not os.path.exists(d / "ckpt-9.data-00000-of-00001")
    assert sorted(os.listdir(d)) == sorted(others + ["checkpoint", "ckpt-3.index", "ckpt-3.data-00000-of-00001",
                                                    "ckpt-10.index", "ckpt-10.data-00000-of-00001"])


def test_manager_sweeps_what_a_delete_killed_midway_left_under_the_lock(tmp_path, monkeypatch):
    from fastckpt.checkpoint import locking
    from fastckpt.checkpoint import manager as manager_mod
    d = tmp_path / "mgr"
    mgr = fastckpt.train.CheckpointManager(fastckpt.train.Checkpoint(model=model()), str(d), max_to_keep=1)
    mgr.save()

    def killed_delete(prefix, fsync=True):  # the index goes first, then the kill
        os.unlink(prefix + ".index")
        raise KeyboardInterrupt

    monkeypatch.setattr(manager_mod, "delete_bundle", killed_delete)
    with pytest.raises(KeyboardInterrupt):
        mgr.save()
    monkeypatch.undo()
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-2.data-00000-of-00001",
                                     "ckpt-2.index"]
    owners = []
    real = manager_mod.CheckpointManager._sweep

    def spy(self, keep):
        st_ = os.stat(d)
        owners.append(locking._table[(st_.st_dev, st_.st_ino)].owner)
        return real(self, keep)

    monkeypatch.setattr(manager_mod.CheckpointManager, "_sweep", spy)
    mgr2 = fastckpt.train.CheckpointManager(fastckpt.train.Checkpoint(model=model()), str(d), max_to_keep=1)
    assert owners and owners[0] is not None  # swept while holding the directory's writer lock
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert mgr2.restore_or_initialize() == str(d / "ckpt-2")


def test_manager_a_damaged_old_checkpoint_is_swept_with_a_warning(tmp_path):
    d = tmp_path / "mgr"
    mgr = fastckpt.train.CheckpointManager(fastckpt.train.Checkpoint(model=model()), str(d), max_to_keep=1)
    mgr.save()
    (d / "ckpt-1.fastckpt-commit").write_bytes(b"not a journal")
    with pytest.warns(UserWarning, match="ckpt-1"):
        mgr.save()
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]


def test_manager_keeps_the_latest_listed_checkpoint_even_if_the_list_omits_it(tmp_path):
    ckpt = fastckpt.train.Checkpoint(model=model())
    d = tmp_path / "mgr"
    ckpt.write(str(d / "ckpt-5"))
    (d / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
    mgr = fastckpt.train.CheckpointManager(ckpt, str(d))
    assert os.path.exists(d / "ckpt-5.index") and os.path.exists(d / "ckpt-5.data-00000-of-00001")
    assert fastckpt.train.latest_checkpoint(str(d)) == str(d / "ckpt-5")
    del mgr


# --- BackupAndRestore: deleting the backup, interrupted anywhere --------------------------------

class _Killed(BaseException):
    """Stands for a SIGKILL: nothing in fastckpt catches it."""


class _Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def _completed_backup(tmp_path, xy, backup):
    """A backup left as a completed fit's deletion would start from (delete_checkpoint=False)."""
    model().fit(*xy, epochs=2, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    return sorted(os.listdir(os.path.join(backup, "chief")))


class _KillRemovalAt(keras.callbacks.Callback):
    """Placed before BackupAndRestore: from on_train_end on, the k-th file or directory removal
    raises _Killed (and every later one too, as nothing runs after a kill)."""

    def __init__(self, k, monkeypatch):
        super().__init__()
        self.k, self.n, self.mp = k, 0, monkeypatch

    def on_train_end(self, logs=None):
        for name in ("unlink", "rmdir", "remove"):
            self.mp.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real):
        def f(*a, **kw):
            self.n += 1
            if self.n >= self.k:
                raise _Killed()
            return real(*a, **kw)
        return f


def test_backup_deletion_interrupted_at_every_step_leaves_a_recoverable_directory(tmp_path, xy, monkeypatch):
    outcomes = []
    for k in range(1, 50):
        backup = str(tmp_path / f"backup{k}")
        try:
            model().fit(*xy, epochs=2, verbose=0, callbacks=[_KillRemovalAt(k, monkeypatch),
                                                             keras.callbacks.BackupAndRestore(backup)])
            finished = True
        except _Killed:
            finished = False
        finally:
            monkeypatch.undo()
        if finished:
            assert not os.path.exists(backup)
            break
        named = os.path.exists(os.path.join(backup, "chief", "checkpoint"))
        seen = _Seen()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = model().fit(*xy, epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), seen])
        # Interrupted before its first step the backup is whole (and resumed from: nothing left to
        # do); after it, it names no checkpoint and the next fit starts afresh. Never a failure.
        assert seen.epochs == ([] if named else [0, 1]), k
        assert len(hist.history.get("loss", [])) == len(seen.epochs)
        assert not os.path.exists(backup), (k, os.listdir(backup))
        outcomes.append(named)
    else:
        pytest.fail("the deletion never finished")
    assert outcomes[0] and not any(outcomes[1:]) and len(outcomes) >= 4, outcomes


@pytest.mark.parametrize("remove", [("checkpoint",), ("index",), ("data",), ("checkpoint", "index"),
                                    ("checkpoint", "data"), ("index", "data")])
def test_restart_recovers_from_any_partly_deleted_backup(tmp_path, xy, remove):
    """What an interrupted ``rmtree`` of the backup (fastckpt before this fix, or a user) can
    leave: any of its files missing. The next fit starts afresh instead of failing."""
    backup = str(tmp_path / "backup")
    names = _completed_backup(tmp_path, xy, backup)
    assert names == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    chief = os.path.join(backup, "chief")
    for what in remove:
        os.remove(os.path.join(chief, {"checkpoint": "checkpoint", "index": "ckpt-2.index",
                                       "data": "ckpt-2.data-00000-of-00001"}[what]))
    seen = _Seen()
    with pytest.warns(UserWarning, match="BackupAndRestore") as record:
        model().fit(*xy, epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), seen])
    assert seen.epochs == [0, 1]
    assert any(backup in m for m in messages(record))
    assert not os.path.exists(backup)


def test_a_damaged_backup_is_reported_not_discarded(tmp_path, xy):
    backup = str(tmp_path / "backup")
    _completed_backup(tmp_path, xy, backup)
    data = os.path.join(backup, "chief", "ckpt-2.data-00000-of-00001")
    raw = bytearray(open(data, "rb").read())
    raw[len(raw) // 2] ^= 0x10
    open(data, "wb").write(bytes(raw))
    with pytest.raises(CorruptCheckpointError):
        model().fit(*xy, epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert os.path.exists(data)  # left for the user to look at


# --- the `checkpoint` state file ---------------------------------------------------------------

@pytest.mark.parametrize("text", [
    'model_checkpoint_path: "a\\8"\n',
    'model_checkpoint_path: "a\\9b"\n',
    'model_checkpoint_path: "a\\q"\n',
    'model_checkpoint_path: "a\\x"\n',
    'model_checkpoint_path: "a\\777"\n',
    'model_checkpoint_path: "a\\000b"\n',
    'all_model_checkpoint_paths: "a\\"\n',
    "all_model_checkpoint_timestamps: ..\n",
    "all_model_checkpoint_timestamps: 1.2.3\n",
    "last_preserved_timestamp: -\n",
    "last_preserved_timestamp: e\n",
])
def test_malformed_state_files_are_typed_errors_naming_the_file(tmp_path, text):
    (tmp_path / "checkpoint").write_text(text)
    with pytest.raises(CorruptCheckpointError, match="checkpoint") as e:
        state_mod.read_state(str(tmp_path))
    assert e.value.path == str(tmp_path / "checkpoint")
    with pytest.raises(CorruptCheckpointError):
        fastckpt.train.latest_checkpoint(str(tmp_path))


def test_state_file_escapes_are_bytes_of_utf8_names(tmp_path):
    """TensorFlow's text format writes non-ASCII bytes as octal escapes: they are UTF-8 bytes."""
    st_ = state_mod.parse_state('model_checkpoint_path: "caf\\303\\251\\x2fx\\n\\t\\\\\\"\\a"\n')
    assert st_.model_checkpoint_path == 'café/x\n\t\\"\a'
    odd = "ckpt-\udcff\x01é"  # a non-UTF-8 byte, as os.listdir gives it, and a control char
    state_mod.write_state(str(tmp_path), str(tmp_path / odd))
    assert state_mod.read_state(str(tmp_path)).model_checkpoint_path == odd


_FIELDS = st.sampled_from(["model_checkpoint_path", "all_model_checkpoint_paths",
                           "all_model_checkpoint_timestamps", "last_preserved_timestamp", "other"])
_CHARS = st.sampled_from(list('"\\\'.-+eExX0123456789abfnrtv?#: \t\x00é\udcff'))
_VALUES = st.text(_CHARS, max_size=10) | st.text(_CHARS, max_size=10).map(lambda v: f'"{v}"')
_LINES = st.builds(lambda k, sep, v: k + sep + v, _FIELDS, st.sampled_from([": ", ":", " :  "]), _VALUES)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_LINES, max_size=4).map("\n".join) | st.text(max_size=40))
def test_state_parser_fuzz_raises_only_typed_errors_and_round_trips(text):
    try:
        parsed = state_mod.parse_state(text, "F")
    except CorruptCheckpointError as e:
        assert e.path == "F" and "F" in str(e)
        return
    again = state_mod.parse_state(state_mod.format_state(parsed), "G")
    assert again.model_checkpoint_path == parsed.model_checkpoint_path
    assert again.all_model_checkpoint_paths == parsed.all_model_checkpoint_paths


def test_state_file_write_sweeps_dead_temps_under_the_lock(tmp_path, monkeypatch):
    from fastckpt.checkpoint import locking
    dead = ["checkpoint.tmp-0123456789abcdef", "checkpoint.tmp-fedcba9876543210"]
    kept = ["checkpoint.tmp-0123", "checkpoint.tmp-0123456789ABCDEF", "checkpoint.tmp-0123456789abcdef.x",
            "other.tmp-0123456789abcdef", "checkpoint.bak"]
    for name in dead + kept:
        (tmp_path / name).write_bytes(b"x")
    held = []
    real = locking.sweep_temps

    def spy(final):
        held.append(locking._table.get((os.stat(tmp_path).st_dev, os.stat(tmp_path).st_ino)).owner)
        return real(final)

    monkeypatch.setattr(locking, "sweep_temps", spy)
    state_mod.write_state(str(tmp_path), str(tmp_path / "cp.ckpt"))
    assert held and held[0] is not None  # swept while this thread held the directory's lock
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["checkpoint"])
    assert state_mod.read_state(str(tmp_path)).model_checkpoint_path == "cp.ckpt"
