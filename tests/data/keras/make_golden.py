"""Write the small golden files the saving tests read, with the real libraries.

    TF_CPP_MIN_LOG_LEVEL=3 python tests/data/keras/make_golden.py

Needs tf_keras 2.21 and keras 3.15 (TF backend). Each model is the tutorial's shape, scaled down
(6 features, 8 hidden units, 3 classes) so the files stay a few KiB; it is compiled with Adam,
sparse categorical cross-entropy and ``metrics=['accuracy']``, fitted for 2 steps, and saved in
every format that library writes. ``expected.npz`` holds the inputs, labels and, per file, the
predictions, the evaluate numbers, the optimizer iteration count and the Adam slots.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def data():
    rng = np.random.default_rng(7)
    x = rng.random((64, 6), dtype=np.float32)
    y = (x[:, :3].argmax(1)).astype(np.int64)
    return x, y


def record(out, tag, model, x, y, slots):
    out[f"{tag}_pred"] = model.predict(x, verbose=0)
    ev = model.evaluate(x, y, verbose=0, return_dict=True)
    out[f"{tag}_loss"] = np.float64(ev["loss"])
    out[f"{tag}_accuracy"] = np.float64(ev["accuracy"])
    out[f"{tag}_iterations"] = np.int64(int(model.optimizer.iterations.numpy()))
    for i, s in enumerate(slots):
        out[f"{tag}_slot{i}"] = np.asarray(s)


def tf_keras_files(out, x, y):
    import tf_keras as k
    k.utils.set_random_seed(1)
    m = k.Sequential([k.layers.Dense(8, activation="relu", input_shape=(6,)),
                      k.layers.Dropout(0.2), k.layers.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    m.save(os.path.join(HERE, "tf_keras_model.h5"))
    m.save_weights(os.path.join(HERE, "tf_keras_weights.h5"))
    # optimizer.variables: iteration, then m/v per trainable variable
    record(out, "tf_keras", m, x, y, [v.numpy() for v in m.optimizer.variables[1:]])
    lam = k.Sequential([k.layers.Dense(3, input_shape=(6,)), k.layers.Lambda(lambda t: t * 2.0)])
    lam.save(os.path.join(HERE, "tf_keras_lambda.h5"))


def keras3_files(out, x, y):
    import keras
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax")])
    m.compile(keras.optimizers.Adam(learning_rate=0.002), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    m.save(os.path.join(HERE, "keras3_model.keras"))
    m.save(os.path.join(HERE, "keras3_model.h5"))
    m.save_weights(os.path.join(HERE, "keras3_model.weights.h5"))
    # optimizer.variables: iteration, learning_rate, then momentum/velocity per variable
    record(out, "keras3", m, x, y, [np.asarray(v) for v in m.optimizer.variables[2:]])


def main():
    x, y = data()
    out = {"x": x, "y": y}
    tf_keras_files(out, x, y)
    keras3_files(out, x, y)
    np.savez(os.path.join(HERE, "expected.npz"), **out)
    print("wrote", sorted(f for f in os.listdir(HERE) if not f.endswith(".py")), file=sys.stderr)


if __name__ == "__main__":
    main()
