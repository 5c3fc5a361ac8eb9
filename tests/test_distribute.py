"""``fastckpt.distribute``: the strategy API, and checkpoints written one shard per replica.

The collective save is tested two ways: in one process with replicas played by threads (no MPI
needed: the protocol, failures and the layout), and under ``mpiexec -n 2`` / ``-n 3`` when MPI is
installed (``pip install "fastckpt[mpi]"``; CI requires it).
"""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastckpt
from fastckpt import keras, ops
from fastckpt.checkpoint.bundle import BundleReader, write_bundle, write_bundle_collective
from fastckpt.distribute.strategy import Strategy

WORKER = os.path.join(os.path.dirname(__file__), "mpi", "worker.py")


# --- one process -----------------------------------------------------------------------------------
def test_default_strategy_has_one_replica_and_scopes_nest():
    s = fastckpt.distribute.MultiWorkerMirroredStrategy()
    assert s.num_replicas_in_sync == 1 and s.cluster_resolver.task_id == 0
    assert not fastckpt.distribute.has_strategy()
    with s.scope():
        assert fastckpt.distribute.get_strategy() is s
        model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    assert model._distribute_strategy is s
    assert fastckpt.distribute.get_strategy() is not s


def test_collective_layout_is_contiguous_by_first_byte():
    tensors = [(f"t{i}".encode(), 1, [n], np.zeros(n, np.float32))
               for i, n in enumerate([10, 10, 10, 10, 40, 5, 5, 10])]
    for n in (1, 2, 3, 4):
        layout = ops.bundle_collective_layout(tensors, n)
        assert layout == sorted(layout), "shards must be contiguous runs in caller order"
        assert layout[0] == 0 and max(layout) <= n - 1
    # 400 bytes in 4 shares of 100: tensors start at bytes 0, 40, 80, 120, 160, 320, 340, 360, so
    # each goes to share start // 100; the 160-byte tensor spans share 2, which stays empty.
    assert ops.bundle_collective_layout(tensors, 4) == [0, 0, 0, 1, 1, 3, 3, 3]


class ThreadReplicas(Strategy):
    """N replicas played by N threads of this process, with real barriers between them."""

    def __init__(self, n: int, rank: int, shared: dict):
        super().__init__()
        self.cluster_resolver.task_id, self.cluster_resolver.num_workers = rank, n
        self._shared = shared

    def _exchange(self, obj):
        sh = self._shared
        sh["slots"][self.rank] = obj
        sh["barrier"].wait()
        out = list(sh["slots"])
        sh["barrier"].wait()
        return out

    def bcast(self, obj, root=0):
        return self._exchange(obj)[root]

    def gather(self, obj, root=0):
        out = self._exchange(obj)
        return out if self.rank == root else None

    def allgather(self, obj):
        return self._exchange(obj)

    def barrier(self):
        self._shared["barrier"].wait()


def run_replicas(n, fn):
    shared = {"slots": [None] * n, "barrier": threading.Barrier(n)}
    results, errors = [None] * n, [None] * n

    def body(r):
        try:
            results[r] = fn(ThreadReplicas(n, r, shared))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors[r] = e

    threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def tensors_for(seed):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((30, 7)).astype(np.float32), "b": rng.standard_normal(5),
            "c": np.arange(12, dtype=np.int64).reshape(3, 4), "s": b"label",
            "d": rng.standard_normal((64,)).astype(np.float32)}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_collective_save_equals_single_writer(tmp_path, n):
    tensors = tensors_for(1)
    prefix = str(tmp_path / "ckpt")
    _, errors = run_replicas(n, lambda s: write_bundle_collective(prefix, tensors, s))
    assert errors == [None] * n
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["ckpt.index"] + [f"ckpt.data-{r:05d}-of-{n:05d}" for r in range(n)])
    with BundleReader(prefix) as r:
        assert r.num_shards == n
        for k, v in tensors.items():
            got = r.get_tensor(k)
            assert got == v if isinstance(v, bytes) else np.array_equal(got, v)
    # Same bytes as one process writing the same tensors as one shard.
    single = str(tmp_path / "single" / "ckpt")
    os.makedirs(os.path.dirname(single))
    write_bundle(single, tensors)
    data = b"".join(open(f"{prefix}.data-{r:05d}-of-{n:05d}", "rb").read() for r in range(n))
    assert data == open(f"{single}.data-00000-of-00001", "rb").read()


def test_a_failing_replica_fails_every_replica_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    prefix = str(tmp_path / "ckpt")
    old = tensors_for(1)
    _, errors = run_replicas(3, lambda s: write_bundle_collective(prefix, old, s))
    assert errors == [None] * 3
    before = sorted(os.listdir(tmp_path))
    real = ops.bundle_collective_write

    def failing_on_replica_2(prefix_, items, n, rank, *rest):
        if rank == 2:  # this replica's disk fails after part of its shard is written
            real(prefix_, items, n, rank, *rest)
            raise OSError(5, "disk on fire")
        return real(prefix_, items, n, rank, *rest)

    monkeypatch.setattr(ops, "bundle_collective_write", failing_on_replica_2)
    _, errors = run_replicas(3, lambda s: write_bundle_collective(prefix, tensors_for(2), s))
    assert all(isinstance(e, OSError) for e in errors), errors
    assert all("rank 2" in str(e) or "disk on fire" in str(e) for e in errors), errors
    assert sorted(os.listdir(tmp_path)) == before, "no temp left behind, nothing replaced"
    with BundleReader(prefix) as r:
        assert np.array_equal(r.get_tensor("a"), old["a"])


def test_commit_refuses_a_missing_shard(tmp_path, monkeypatch):
    """Rank 0 checks that every shard is there, whole, before it publishes the index."""
    prefix = str(tmp_path / "ckpt")
    real = ops.bundle_collective_write

    def lost(prefix_, items, n, rank, token, *rest):
        out = real(prefix_, items, n, rank, token, *rest)
        if rank == 1:  # written, then lost (another node's disk, not shared after all)
            os.unlink(f"{os.fsdecode(prefix_)}.data-00001-of-00002.tmp-{token}")
        return out

    monkeypatch.setattr(ops, "bundle_collective_write", lost)
    _, errors = run_replicas(2, lambda s: write_bundle_collective(prefix, tensors_for(3), s))
    assert all(isinstance(e, OSError) and "shard missing" in str(e) for e in errors), errors
    assert os.listdir(tmp_path) == []


def test_save_weights_under_thread_replicas_loads_in_one_process(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,)),
                              keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    prefix = str(tmp_path / "w")

    def save(s):
        model._distribute_strategy = s  # each "replica" saves the same model
        from fastckpt.saving.weights_io import tf_weight_tensors, write_tf_weights
        write_tf_weights(prefix, tf_weight_tensors(model), strategy=s)

    _, errors = run_replicas(2, save)
    assert errors == [None, None]
    assert os.path.exists(f"{prefix}.data-00001-of-00002")
    other = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,)),
                              keras.layers.Dense(3)])
    other.load_weights(prefix)
    for a, b in zip(model.get_weights(), other.get_weights()):
        assert np.array_equal(a, b)
    assert keras.__name__ and open(tmp_path / "checkpoint").read().startswith('model_checkpoint_path: "w"')


# --- gradient buckets (one process, a recording strategy) -------------------------------------------
class RecordingStrategy(Strategy):
    """Records when each bucket's allreduce would start, relative to the backward pass."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def start_allreduce_sum_(self, array):
        self.log.append(("start", array.ctypes.data))
        return object()

    def test_all(self, handles):
        return False

    def wait_all(self, handles):
        self.log.append(("wait", len(handles)))


def _record_backward(layers, log):
    for layer in layers:
        def wrapped(g, *args, _real=layer.backward, _name=layer.name, **kw):
            out = _real(g, *args, **kw)
            log.append(("bw", _name))
            return out
        layer.backward = wrapped


def _worker():
    import importlib.util
    spec = importlib.util.spec_from_file_location("worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker


def _one_backward(model, buckets, x):
    outs = model._forward_train([x], True)
    buckets.begin()
    model._backward([np.ones_like(outs[0])], layer_done=buckets.layer_done)
    buckets.finish()


def test_gradient_arena_holds_every_gradient_in_backward_order_and_changes_no_number():
    from fastckpt.training.distributed import GradientBuckets
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.layers.Dense(n, activation="tanh", input_shape=(6,), name=f"d{i}")
                              for i, n in enumerate([7, 9, 5, 3])])
    x = np.random.default_rng(0).standard_normal((11, 6)).astype(np.float32)
    outs = model._forward_train([x], True)
    model._backward([np.ones_like(outs[0])])
    before = [g.copy() for g, _ in model._grads_and_vars()]
    buckets = GradientBuckets(model, RecordingStrategy([]), bucket_bytes=1)
    pairs = model._grads_and_vars()
    arena = buckets.arena
    starts = [g.ctypes.data for g, _ in pairs]
    assert all(np.shares_memory(g, arena) for g, _ in pairs) and not buckets.loose
    assert all(a % 64 == 0 for a in starts), "each gradient 64-byte aligned in the arena"
    assert starts[-2] < starts[-1] < starts[0], "last layer first: d3's kernel, d3's bias, ..., d0"
    assert len(buckets.buckets) == 4  # one per layer at bucket_bytes=1
    _one_backward(model, buckets, x)
    for g, (g2, _) in zip(before, model._grads_and_vars()):
        np.testing.assert_array_equal(g, g2)
    # Large buckets: the whole arena in one.
    assert len(GradientBuckets(model, RecordingStrategy([]), bucket_bytes=1 << 20).buckets) == 1
    s = fastckpt.distribute.MultiWorkerMirroredStrategy(
        communication_options=type("Options", (), {"bytes_per_pack": 200})())
    from fastckpt.training.distributed import bucket_bytes
    assert bucket_bytes(s) == 200


def test_placing_gradient_buffers_checks_them():
    layer = keras.layers.Dense(3, name="dd")
    layer.build((None, 2))
    with pytest.raises(ValueError, match="'dd': 1 gradient buffers for 2 trainable weights"):
        layer._place_grad_buffers([np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match="'dd'.*kernel.*float32 array of shape \\(2, 3\\), got float64"):
        layer._place_grad_buffers([np.zeros((2, 3)), np.zeros(3, np.float32)])
    arena = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        layer._place_grad_buffers([arena[:12:2].reshape(2, 3), arena[:3]])
    layer._place_grad_buffers([arena[:6].reshape(2, 3), arena[8:11]])
    assert layer._grad_buffers()[1].base is not None and np.shares_memory(layer._grad_buffers()[1], arena)


def test_a_bucket_starts_while_the_layers_below_are_differentiated():
    from fastckpt.training.distributed import GradientBuckets
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.layers.Dense(8, input_shape=(6,), name=f"d{i}") if i == 0 else
                              keras.layers.Dense(8, name=f"d{i}") for i in range(4)])
    x = np.ones((5, 6), np.float32)
    model.predict(x, verbose=0)
    log = []
    buckets = GradientBuckets(model, RecordingStrategy(log), bucket_bytes=1)
    first_of = [b.ctypes.data for b in buckets.buckets]
    _record_backward(model.layers, log)
    _one_backward(model, buckets, x)
    starts = [first_of.index(e[1]) for e in log if e[0] == "start"]
    assert starts == [0, 1, 2, 3]
    assert [e[0] for e in log] == ["bw", "start"] * 4 + ["wait"], log
    assert [e[1] for e in log if e[0] == "bw"] == ["d3", "d2", "d1", "d0"]


def test_graph_buckets_start_only_after_a_shared_layer_s_last_use():
    """The layer called twice, and the nested model, are complete only after their last backward;
    every bucket starts after all of its layers' backward calls."""
    from fastckpt.training.distributed import GradientBuckets
    model = _worker().build_graph()
    x = np.random.default_rng(1).standard_normal((9, 20)).astype(np.float32)
    model.predict(x, verbose=0)
    log = []
    buckets = GradientBuckets(model, RecordingStrategy(log), bucket_bytes=1)
    inner = model.get_layer("inner")
    _record_backward([la for la in model.layers if la.trainable_weights] + list(inner.layers), log)
    _one_backward(model, buckets, x)
    bucket_of = {}
    for i, b in enumerate(buckets.buckets):
        for layer in [la for la in model.layers if la.trainable_weights] + list(inner.layers):
            if any(np.shares_memory(g, b) for g in layer._grad_buffers()):
                bucket_of.setdefault(layer.name, set()).add(i)
    first_of = [b.ctypes.data for b in buckets.buckets]
    pos_start = {first_of.index(e[1]): k for k, e in enumerate(log) if e[0] == "start"}
    assert sorted(pos_start) == list(range(len(buckets.buckets))) == list(range(7))
    for name, bs in bucket_of.items():
        last_bw = max(k for k, e in enumerate(log) if e == ("bw", name))
        for b in bs:
            assert pos_start[b] > last_bw, (name, b, log)
    assert sum(1 for e in log if e == ("bw", "shared")) == 2
    last_bw = max(k for k, e in enumerate(log) if e[0] == "bw")
    assert min(pos_start.values()) < last_bw, "no bucket overlapped the backward pass"


# --- several processes (mpiexec) -------------------------------------------------------------------
def _mpiexec():
    if os.environ.get("FASTCKPT_REQUIRE_INTEROP") != "1":
        pytest.importorskip("mpi4py")
    else:
        import mpi4py  # noqa: F401  (CI: MPI must be there)
    exe = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(exe):
        if os.environ.get("FASTCKPT_REQUIRE_INTEROP") == "1":
            raise AssertionError("mpiexec not found (pip install 'fastckpt[mpi]')")
        pytest.skip("mpiexec not found")
    return exe


def run_mpi(n, mode, workdir, timeout=120, **env_vars):
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTCKPT_NUM_THREADS="1", **env_vars)
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, WORKER, mode, str(workdir)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return proc, result


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_save_weights_one_shard_per_rank(tmp_path, n):
    proc, result = run_mpi(n, "save", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["n"] == n
    shards = [f"ckpt.data-{r:05d}-of-{n:05d}" for r in range(n)]
    assert result["files"] == sorted(["checkpoint", "ckpt.index"] + shards)
    # A single process loads the sharded checkpoint.
    import importlib.util
    spec = importlib.util.spec_from_file_location("worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    model = worker.build(seed=99)
    model.load_weights(str(tmp_path / "ckpt"))
    for got, want in zip(model.get_weights(), result["weights"]):
        assert np.array_equal(got, np.asarray(want, np.float32))


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_model_save_directory_one_shard_per_rank(tmp_path, n):
    """model.save of a directory under a strategy: each rank writes its shard of
    variables/variables, rank 0 commits the directory; one process loads it."""
    proc, result = run_mpi(n, "save-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = [f"variables.data-{r:05d}-of-{n:05d}" for r in range(n)]
    assert result["files"] == sorted(["variables.index"] + shards)
    assert result["entries"] == ["model"]  # no temp directory left behind
    from fastckpt import keras
    loaded = keras.models.load_model(str(tmp_path / "model"))
    for got, want in zip(loaded.get_weights(), result["weights"]):
        assert np.array_equal(got, np.asarray(want, np.float32))


def test_mpi_model_save_directory_failing_on_one_rank_keeps_the_old_one(tmp_path):
    proc, result = run_mpi(2, "save-dir-fail", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["raised"] and "rank 1" in result["raised"] and "injected" in result["raised"]
    assert result["entries"] == ["model"]
    from fastckpt import keras
    loaded = keras.models.load_model(str(tmp_path / "model"))
    for got, want in zip(loaded.get_weights(), result["weights"]):
        assert np.array_equal(got, np.asarray(want, np.float32))


def test_mpi_rank_killed_mid_save_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    proc, result = run_mpi(3, "kill-after-shard", tmp_path, timeout=60)
    assert proc.returncode != 0 and result is None
    # The first save is intact and loadable; the second was never committed.
    with BundleReader(str(tmp_path / "ckpt")) as r:
        assert r.num_shards == 3
        kernel = r.get_tensor("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
        assert not np.all(kernel == 3.0)
    # The next save (one process) clears the dead temps.
    w = tensors_for(4)
    write_bundle(str(tmp_path / "ckpt"), w)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_mpi_failure_on_one_rank_raises_on_every_rank(tmp_path):
    proc, result = run_mpi(2, "fail-on-one-rank", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["raised"] and "rank 1" in result["raised"] and "injected" in result["raised"]
    assert not [f for f in result["files"] if ".tmp-" in f]


def test_tensorflow_reads_the_sharded_checkpoint(tmp_path):
    from interop.conftest import require
    tf = require("tensorflow")
    proc, result = run_mpi(2, "save", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt"))
    kernel = reader.get_tensor("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert np.array_equal(kernel, np.asarray(result["weights"][0], np.float32))


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_fit_equals_one_process(tmp_path, n):
    """N ranks train the model one process trains: same global batches (shuffled), dropout masks by
    global row, summed gradients; History, evaluate and predict are global and equal everywhere."""
    one = subprocess.run([sys.executable, WORKER, "fit", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = json.loads([ln for ln in one.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])
    proc, got = run_mpi(n, "fit", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert got["n"] == n and ref["n"] == 1
    for a, b in zip(got["weights"], ref["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert got["history"].keys() == ref["history"].keys()
    for k in ref["history"]:
        np.testing.assert_allclose(got["history"][k], ref["history"][k], rtol=1e-4)
    np.testing.assert_allclose(got["evaluate"], ref["evaluate"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got["predict"]), np.asarray(ref["predict"]), rtol=1e-5,
                               atol=1e-6)
    assert got["same_predict_everywhere"]


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_fit_of_a_graph_with_one_bucket_per_layer_equals_one_process(tmp_path, n):
    """Buckets sent during the backward pass of a graph (a layer used twice, a nested model,
    regularizers) sum to the one-process gradients."""
    one = subprocess.run([sys.executable, WORKER, "fit-graph", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = json.loads([ln for ln in one.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])
    proc, got = run_mpi(n, "fit-graph", tmp_path, FASTCKPT_BUCKET_BYTES="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert got["n"] == n and got["buckets"] == 7
    for a, b in zip(got["weights"], ref["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    for k in ref["history"]:
        np.testing.assert_allclose(got["history"][k], ref["history"][k], rtol=1e-4)


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_fit_on_a_sequence_and_a_generator_shards_every_global_batch(tmp_path, n):
    """Every rank runs the same Sequence (shuffled) or generator and takes its share of each
    global batch: the same model as one process, dropout included; evaluate on a Sequence too."""
    one = subprocess.run([sys.executable, WORKER, "fit-gen", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = json.loads([ln for ln in one.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])
    proc, got = run_mpi(n, "fit-gen", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert got["n"] == n
    for a, b in zip(got["weights"], ref["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert got["history"].keys() == ref["history"].keys() and "seq_val_loss" in ref["history"]
    for k in ref["history"]:
        np.testing.assert_allclose(got["history"][k], ref["history"][k], rtol=1e-4)
    np.testing.assert_allclose(got["evaluate"], ref["evaluate"], rtol=1e-5)


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_rank_killed_mid_epoch_then_backup_resumes_to_the_same_result(tmp_path, n):
    import time
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    proc, ref = run_mpi(n, "fit-backup", ref_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t0 = time.monotonic()
    # The last rank dies at batch 1 of epoch 3.
    proc, got = run_mpi(n, "fit-backup", run_dir, timeout=60, FASTCKPT_TEST_KILL_AT="2,1")
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0 and got is None
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end after a rank died"
    assert "KILLED" in proc.stdout + proc.stderr or "TERMINATION" in proc.stdout + proc.stderr, \
        (proc.stdout + proc.stderr)[-2000:]
    # The checkpoints of epochs 1-2 are whole; the backup holds epoch 2.
    assert os.path.exists(run_dir / "ckpt-2.index") and not os.path.exists(run_dir / "ckpt-4.index")
    proc, got = run_mpi(n, "fit-backup", run_dir)  # the same job again: resumes at epoch 3
    assert proc.returncode == 0, proc.stderr[-3000:]
    for a, b in zip(got["weights"], ref["weights"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert "backup" not in got["files"]  # deleted after the completed fit, by rank 0
    lines = open(run_dir / "log.csv").read().strip().splitlines()
    assert lines[0].startswith("epoch") and lines.count(lines[0]) == 1


def test_mpi_strategy_after_a_model_is_a_typed_error(tmp_path):
    proc, result = run_mpi(2, "late-strategy", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "must be created before any model" in result["raised"]


def test_mpi_ranks_building_different_models_get_an_error_naming_the_difference(tmp_path):
    proc, result = run_mpi(2, "different-models", tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Replicas built different models" in result["raised"]
    assert "(20, 64)" in result["raised"] and "(20, 65)" in result["raised"] and "rank 1" in result["raised"]


def test_a_sharded_checkpoint_missing_a_shard_is_a_typed_error(tmp_path):
    from fastckpt.errors import CheckpointNotFoundError
    prefix = str(tmp_path / "ckpt")
    _, errors = run_replicas(3, lambda s: write_bundle_collective(prefix, tensors_for(1), s))
    assert errors == [None] * 3
    os.unlink(f"{prefix}.data-00001-of-00003")
    with pytest.raises(CheckpointNotFoundError, match="data-00001-of-00003"):
        with BundleReader(prefix) as r:
            for k in r.keys():
                r.get_tensor(k)
