"""Keras 3 (the ``keras`` package) with the TensorFlow backend."""

from __future__ import annotations

import os

from bench.workloads.base import THREADS


def _keras():
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # tf.keras must not be redirected to Keras 2 here
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Keras 3 picked backend {keras.backend.backend()!r}, expected tensorflow")
    return keras


def mlp(cfg, data, params) -> dict:
    from bench.peers.keras_common import mlp as run

    return run(_keras(), cfg, data, params)
