"""The tutorial "Save and load models", end to end, on a real dataset that needs no network.

Trains the tutorial's model (Dense 512 relu -> Dropout 0.2 -> Dense 10, Adam, sparse categorical
cross-entropy from logits) on the UCI handwritten digits shipped with scikit-learn, shaped like
MNIST, and reports held-out accuracy.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Optional

import numpy as np
import fastckpt as tf
from fastckpt import keras
from fastckpt.checkpoint import BundleReader
from fastckpt.keras import datasets

__all__ = ["run"]


def _load(n_train: int):
    (x_train, y_train), (x_test, y_test) = datasets.digits.load_data()
    x_train = x_train[:n_train].reshape(-1, 28 * 28).astype(np.float32) / 255.0
    x_test = x_test.reshape(-1, 28 * 28).astype(np.float32) / 255.0
    return (x_train, y_train[:n_train]), (x_test, y_test)


def create_model():

    model = keras.models.Sequential([
        keras.layers.Dense(512, activation="relu", input_shape=(784,)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=tf.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf.metrics.SparseCategoricalAccuracy()])
    return model


def _report(label: str, acc: float, reference: float) -> None:
    same = "identical" if acc == reference else f"DIFFERENT (original {100 * reference:5.2f}%)"
    print(f"{label:<44} accuracy: {100 * acc:5.2f}%  [{same}]")


def run(workdir: Optional[str] = None, epochs: int = 10, n_train: int = 1000, seed: int = 0,
        verbose: int = 1) -> dict:
    """Run the walk-through; returns the accuracies it printed (the tests check them)."""

    keras.utils.set_random_seed(seed)
    workdir = workdir or tempfile.mkdtemp(prefix="fastckpt-demo-")
    os.makedirs(workdir, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = _load(n_train)
    print(f"digits: {len(x_train)} training and {len(x_test)} held-out images, 28x28 -> 784; "
          f"files go to {workdir}")
    model = create_model()
    model.summary()

    # 1. Checkpoints during training (the same prefix every epoch, atomically replaced).
    checkpoint_path = os.path.join(workdir, "training_1", "cp.ckpt")
    cp_callback = keras.callbacks.ModelCheckpoint(filepath=checkpoint_path, save_weights_only=True,
                                                  verbose=1)
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, validation_data=(x_test, y_test),
              callbacks=[cp_callback], verbose=verbose)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"Trained model, accuracy: {100 * acc:5.2f}%  ({epochs} epochs in {seconds:.2f} s, "
          f"checkpoint every epoch)")
    results = {"trained": acc}

    # 2. A fresh model is at chance until it loads the checkpoint.
    fresh = create_model()
    _, untrained = fresh.evaluate(x_test, y_test, verbose=0)
    print(f"Untrained model, accuracy: {100 * untrained:5.2f}%")
    latest = tf.train.latest_checkpoint(os.path.dirname(checkpoint_path))
    fresh.load_weights(latest)
    _, restored = fresh.evaluate(x_test, y_test, verbose=0)
    _report(f"Restored from latest_checkpoint ({os.path.basename(latest)})", restored, acc)
    results["checkpoint"] = restored

    # 3. Manual save_weights / load_weights.
    manual = os.path.join(workdir, "checkpoints", "my_checkpoint")
    model.save_weights(manual)
    other = create_model()
    other.load_weights(manual)
    _report("Restored from save_weights", other.evaluate(x_test, y_test, verbose=0)[1], acc)
    results["save_weights"] = other.evaluate(x_test, y_test, verbose=0)[1]

    # 4. Whole models: architecture + weights + compile config + optimizer state, in each format.
    for label, name in (("directory", "saved_model/my_model"), ("Keras HDF5", "my_model.h5"),
                        ("Keras 3 .keras", "my_model.keras")):
        path = os.path.join(workdir, name)
        model.save(path)
        restored_model = keras.models.load_model(path)
        r_acc = restored_model.evaluate(x_test, y_test, verbose=0)[1]
        same_opt = int(restored_model.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
        _report(f"load_model({label}){'' if same_opt else ' [optimizer state LOST]'}", r_acc, acc)
        results[name] = r_acc

    # 5. Verify every byte of the checkpoint on disk.
    with BundleReader(latest) as reader:
        reader.verify()
        print(f"Verified {len(reader)} tensors of {latest}: every CRC32C matches")
    return results
