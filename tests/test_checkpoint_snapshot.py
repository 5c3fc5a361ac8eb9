"""ModelCheckpoint's cheap path during fit: the snapshot filled by the last optimizer step of the
epoch (fused trainer) and the writer thread at idle CPU priority."""

import hashlib
import os
import sys
import time

import numpy as np
import pytest

import fastckpt.backend
from fastckpt import keras
from fastckpt.callbacks.callback import Callback
from fastckpt.callbacks import model_checkpoint as mc_mod
from fastckpt.callbacks.model_checkpoint import ModelCheckpoint
from fastckpt.checkpoint import bundle as bundle_mod


_STAGE = bundle_mod.StagedBundle.stage
_WRITE = mc_mod.write_tf_weights


def _model(optimizer):
    fastckpt.backend.clear_session()  # same layer names, same object graph, run after run
    m = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(20,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(5)])
    m.set_weights([np.random.default_rng(i).standard_normal(w.shape).astype(np.float32) * 0.1
                   for i, w in enumerate(m.get_weights())])
    m.layers[1].rng_seed, m.layers[1].rng_offset = 7, 0
    m.compile(optimizer=optimizer, metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _fit(tmp_path, fused, optimizer, monkeypatch, extra=(), **mc_kwargs):
    monkeypatch.setattr(ModelCheckpoint, "fused_snapshot", fused)
    staged_calls = []
    inner = _STAGE

    def spy(self, tensors, threads=None, prefilled=None):
        staged_calls.append(sorted(prefilled or ()))
        return inner(self, tensors, threads, prefilled)

    monkeypatch.setattr(bundle_mod.StagedBundle, "stage", spy)
    rng = np.random.default_rng(0)
    x = rng.random((300, 20), dtype=np.float32)
    y = rng.integers(0, 5, 300).astype(np.int32)
    d = tmp_path / ("fused" if fused else "copy")
    m = _model(optimizer)
    m.fit(x, y, batch_size=32, epochs=3, validation_data=(x[:50], y[:50]), verbose=0,
          shuffle=False, callbacks=list(extra) + [ModelCheckpoint(str(d / "cp"), save_weights_only=True,
                                                                   **mc_kwargs)])
    files = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in sorted(os.listdir(d))
             if f.startswith("cp")}
    return files, staged_calls


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(),
    "adam_amsgrad": lambda: keras.optimizers.Adam(amsgrad=True),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd": lambda: keras.optimizers.SGD(0.05),
}
SLOTS = {"adam": 2, "adam_amsgrad": 3, "sgd_momentum": 1, "sgd": 0}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_fused_snapshot_writes_the_same_bytes_as_the_copy(tmp_path, monkeypatch, opt):
    fused, calls = _fit(tmp_path, True, OPTIMIZERS[opt](), monkeypatch)
    copied, copy_calls = _fit(tmp_path, False, OPTIMIZERS[opt](), monkeypatch)
    assert fused == copied
    assert copy_calls == [[], [], []]
    # Every save took the 4 variables and their slots from the last step, none copied again.
    assert len(calls) == 3 and all(len(c) == 4 * (1 + SLOTS[opt]) for c in calls)


def test_speculative_snapshot_with_save_best_only(tmp_path, monkeypatch):
    # mode "max" on the loss: only the first epoch saves; the later snapshots are dropped.
    kw = dict(save_best_only=True, monitor="loss", mode="max")
    fused, calls = _fit(tmp_path, True, OPTIMIZERS["adam"](), monkeypatch, **kw)
    copied, _ = _fit(tmp_path, False, OPTIMIZERS["adam"](), monkeypatch, **kw)
    assert fused == copied and len(calls) == 1


class _Mutates(Callback):
    def on_epoch_end(self, epoch, logs=None):
        w = self.model.get_weights()
        self.model.set_weights([v * 0.5 for v in w])


def test_no_fused_snapshot_when_a_callback_before_may_change_weights(tmp_path, monkeypatch):
    fused, calls = _fit(tmp_path, True, OPTIMIZERS["adam"](), monkeypatch, extra=[_Mutates()])
    copied, _ = _fit(tmp_path, False, OPTIMIZERS["adam"](), monkeypatch, extra=[_Mutates()])
    assert fused == copied and calls == [[], [], []]


def test_stage_copies_a_prefilled_tensor_whose_place_changed():
    staged = bundle_mod.StagedBundle()
    a = np.arange(10, dtype=np.float32)
    offsets = staged.layout({"a": a, "b": a})
    assert offsets == {"a": 0, "b": 40}
    # A claimed CRC for a tensor laid out elsewhere (or never laid out) is not trusted.
    staged.stage({"b": a, "a": a, "c": a}, prefilled={"a": 123, "c": 456})
    assert staged.nbytes == 120


class _Slow(Callback):
    def on_epoch_begin(self, epoch, logs=None):
        time.sleep(0.3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux only")
def test_writer_thread_runs_at_idle_priority(tmp_path, monkeypatch):
    seen = []
    inner = _WRITE

    def spy(path, tensors, *a, **k):
        import threading
        tid = threading.get_native_id()
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        seen.append((os.sched_getscheduler(0), int(fields[38])))  # field 41: policy
        return inner(path, tensors, *a, **k)

    monkeypatch.setattr(mc_mod, "write_tf_weights", spy)
    monkeypatch.setattr(ModelCheckpoint, "writer_priority", "idle")
    # Each epoch starts late: the writer is never waited for (a wait raises it back to normal).
    _fit(tmp_path, True, OPTIMIZERS["adam"](), monkeypatch, extra=[_Slow()])
    assert seen and all(p == os.SCHED_IDLE and q == os.SCHED_IDLE for p, q in seen)
    monkeypatch.setattr(ModelCheckpoint, "writer_priority", "normal")
    seen.clear()
    _fit(tmp_path / "n", True, OPTIMIZERS["adam"](), monkeypatch)
    assert seen and all(p == os.SCHED_OTHER for p, _ in seen)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux only")
def test_restore_thread_raises_the_writer_back(tmp_path):
    import threading
    from fastckpt.checkpoint.priority import lower_current_thread, restore_thread, thread_policy
    got, go = [], threading.Event()

    def body():
        got.append(lower_current_thread())
        go.wait(10)

    t = threading.Thread(target=body)
    t.start()
    while not got:
        time.sleep(0.01)
    try:
        assert thread_policy(got[0]) == os.SCHED_IDLE
        if restore_thread(got[0]):  # needs CAP_SYS_NICE or RLIMIT_NICE
            assert thread_policy(got[0]) == os.SCHED_OTHER
    finally:
        go.set()
        t.join()


def test_writer_yields_a_compute_thread_while_it_writes(tmp_path, monkeypatch):
    from fastckpt import ops
    seen = []
    inner = _WRITE

    def spy(path, tensors, *a, **k):
        seen.append(ops._core.background_jobs())
        return inner(path, tensors, *a, **k)

    monkeypatch.setattr(mc_mod, "write_tf_weights", spy)
    monkeypatch.setattr(ModelCheckpoint, "yield_compute_thread", True)
    yielded, _ = _fit(tmp_path / "y", False, OPTIMIZERS["adam"](), monkeypatch)
    assert seen == [1, 1, 1] and ops._core.background_jobs() == 0
    monkeypatch.setattr(ModelCheckpoint, "yield_compute_thread", False)
    seen.clear()
    shared, _ = _fit(tmp_path / "s", False, OPTIMIZERS["adam"](), monkeypatch)
    assert seen == [0, 0, 0]
    assert yielded == shared  # the same bytes: kernel results do not depend on the thread count


def test_yield_compute_thread_lowers_the_kernels_thread_count_only_inside(tmp_path):
    from fastckpt import ops
    from fastckpt.checkpoint.priority import yield_compute_thread
    before = ops.num_threads()
    try:
        ops.set_num_threads(3)
        with yield_compute_thread():
            assert ops._core.background_jobs() == 1
            with yield_compute_thread():
                assert ops._core.background_jobs() == 2
            # The configured count is what users see; the kernels' count is one fewer.
            assert ops.num_threads() == 3
        assert ops._core.background_jobs() == 0
        with pytest.raises(RuntimeError):
            with yield_compute_thread():
                raise RuntimeError("job failed")
        assert ops._core.background_jobs() == 0
        # A durable write waits in fsync and O_DIRECT writes with the kernels' threads given
        # back; the job holds its thread again after each.
        with yield_compute_thread():
            bundle_mod.write_bundle(str(tmp_path / "b"), {"w": np.ones((512, 512), np.float32)},
                                    fsync=True)
            assert ops._core.background_jobs() == 1
        assert ops._core.background_jobs() == 0
    finally:
        ops.set_num_threads(before)


def test_fit_frees_its_workspaces_at_the_end_and_the_next_fit_continues_bit_identically(monkeypatch):
    # Peak RSS: fit frees the native workspaces validation sized for a whole pass. The next fit
    # sizes them again; two fits of one epoch equal one fit of two, bit for bit.
    from fastckpt.training import fused as fused_mod
    released = []
    inner = fused_mod.FusedTrainer.release_workspace

    def spy(self):
        released.append(self)
        return inner(self)

    monkeypatch.setattr(fused_mod.FusedTrainer, "release_workspace", spy)
    rng = np.random.default_rng(0)
    x = rng.random((300, 20), dtype=np.float32)
    y = rng.integers(0, 5, 300).astype(np.int32)
    weights = []
    for epochs in ([1, 1], [2]):
        m = _model(keras.optimizers.Adam())
        for e in epochs:
            m.fit(x, y, batch_size=32, epochs=e, validation_data=(x, y), verbose=0, shuffle=False)
        weights.append(m.get_weights() + [m.optimizer.iterations.numpy()])
    assert len(released) == 3
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
