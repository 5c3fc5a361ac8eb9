"""What retention may delete, what killed saves and deletes leave, and the state file's parser.

ModelCheckpoint's ledger and CheckpointManager's state file are notes on disk that anyone who can
write the directory can forge: deleting must be limited to the files the callback or manager
writes itself. BackupAndRestore's deletion after a completed fit must leave, when interrupted at
any step, a directory the next fit recovers from.
"""

import json
import os
import shutil
import warnings

import numpy as np
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


@pytest.fixture
def xy(rng):
    x = rng.random((16, 3), dtype=np.float32)
    return x, (x[:, 0] > 0.5).astype(np.int64)


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
