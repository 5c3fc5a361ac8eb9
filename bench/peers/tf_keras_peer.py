"""tf.keras: the ``tf_keras`` package (Keras 2 API, what ``tf.keras`` is with TF_USE_LEGACY_KERAS=1).

Imported directly as ``tf_keras`` so there is no doubt which Keras is measured; the environment
variable is set too, for any code inside TensorFlow that consults it.
"""

from __future__ import annotations

import os

from bench.workloads.base import THREADS


def _keras():
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    # Must happen before TensorFlow runs its first op; same 2 compute / 1 inter-op as every peer.
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_keras

    return tf_keras


def mlp(cfg, data, params) -> dict:
    from bench.peers.keras_common import mlp as run

    return run(_keras(), cfg, data, params)


def ckpt_methods(method):
    """``tf.train.Checkpoint.write``/``read`` of one variable per tensor.

    The variables exist before timing (a model's would), so ``write`` measures serialization and
    I/O, and ``read`` restores into them. ``load`` returns the variables themselves; the workload
    converts them to NumPy for its correctness check outside the timing.
    """
    _keras()
    import tensorflow as tf

    state = {}

    def prepare(tensors):  # untimed: one set of variables per tensor set
        state["src"] = tensors
        state["keys"] = list(tensors)
        state["vars"] = [tf.Variable(t) for t in tensors.values()]
        state["ckpt"] = tf.train.Checkpoint(vars=state["vars"])

    def save(path, tensors):
        assert state.get("src") is tensors
        state["ckpt"].write(path)

    def load(path, keys):
        state["ckpt"].read(path).assert_consumed()
        return dict(zip(state["keys"], state["vars"]))

    def scrub():
        # Untimed: zero the variables so a read that restores nothing cannot pass the check.
        for v in state["vars"]:
            v.assign(tf.zeros_like(v))

    save.prepare, load.scrub = prepare, scrub
    return save, load, None
