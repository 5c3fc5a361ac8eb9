"""The tutorial "Save and load models", end to end, on a real dataset that needs no network.

Trains the tutorial's model (Dense 512 relu -> Dropout 0.2 -> Dense 10, Adam, sparse categorical
cross-entropy from logits) on the UCI handwritten digits shipped with scikit-learn, shaped like
MNIST, and reports held-out accuracy.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["run"]


def _load(n_train: int):
    from fastckpt.keras import datasets
    (x_train, y_train), (x_test, y_test) = datasets.digits.load_data()
    x_train = x_train[:n_train].reshape(-1, 28 * 28).astype(np.float32) / 255.0
    x_test = x_test.reshape(-1, 28 * 28).astype(np.float32) / 255.0
    return (x_train, y_train[:n_train]), (x_test, y_test)


def create_model():
    import fastckpt as tf
    from fastckpt import keras

    model = keras.models.Sequential([
        keras.layers.Dense(512, activation="relu", input_shape=(784,)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=tf.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf.metrics.SparseCategoricalAccuracy()])
    return model


def run(workdir: str = None, epochs: int = 10, n_train: int = 1000, seed: int = 0,
        verbose: int = 1) -> dict:
    """Run the walk-through; returns the accuracies it printed (used by the tests)."""
    from fastckpt import keras

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = _load(n_train)
    print(f"digits: {len(x_train)} training and {len(x_test)} held-out images, 28x28 -> 784")
    model = create_model()
    model.summary()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, validation_data=(x_test, y_test), verbose=verbose)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=2)
    print(f"Trained model, accuracy: {100 * acc:5.2f}%  ({epochs} epochs in {seconds:.2f} s)")
    return {"trained": acc}
