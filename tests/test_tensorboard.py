"""keras.callbacks.TensorBoard: event files that TensorBoard's own reader opens, with tf.keras'
runs, tags, steps and values. Skipped without tensorboardX (the writer) and tensorboard (the
reader); CI installs both through the ``interop`` extra."""

import json
import os

import numpy as np
import pytest

from fastckpt import keras

XY = (40, 5, 3)


def _reader(path):
    pytest.importorskip("tensorboardX")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0,
                                                   ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _model():
    model = keras.Sequential([keras.layers.Dense(6, activation="relu", input_shape=(5,)),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_epoch_scalars_in_train_and_validation_runs(tmp_path, xy):
    pytest.importorskip("tensorboardX")
    x, y = xy
    model = _model()
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    assert not cb.implements_batch_hooks("train")  # epochs stay native
    history = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0,
                        callbacks=[cb]).history
    assert sorted(os.listdir(tmp_path)) == ["train", "validation"]
    train, val = _reader(str(tmp_path / "train")), _reader(str(tmp_path / "validation"))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train.Tags()["scalars"])
    assert not any(t.startswith("batch_") for t in train.Tags()["scalars"])
    for name in ("loss", "accuracy"):
        got = _scalars(train, "epoch_" + name)
        assert [s for s, _ in got] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in got], history[name], rtol=1e-6)
        got = _scalars(val, "epoch_" + name)
        np.testing.assert_allclose([v for _, v in got], history["val_" + name], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in _scalars(train, "epoch_learning_rate")], [0.05] * 3,
                               rtol=1e-6)
    # tf.keras also logs each validation pass against the optimizer's step count (3 steps/epoch).
    steps = [s for s, _ in _scalars(val, "evaluation_loss_vs_iterations")]
    assert steps == [4, 8, 12]
    # The model config for TensorBoard's graph plugin.
    tensor = train.Tensors("keras")[0].tensor_proto
    config = json.loads(tensor.string_val[0].decode("utf-8"))
    assert config["class_name"] == "Sequential"


@pytest.mark.parametrize("update_freq,expected_steps", [("batch", list(range(1, 11))),
                                                        (3, [3, 6, 9])])
def test_batch_scalars_with_update_freq(tmp_path, xy, update_freq, expected_steps):
    pytest.importorskip("tensorboardX")
    x, y = xy
    batches = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append(dict(logs)))
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=update_freq,
                                     write_graph=False)
    _model().fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[record, cb])
    train = _reader(str(tmp_path / "train"))
    got = _scalars(train, "batch_loss")
    assert [s for s, _ in got] == expected_steps  # counted across epochs, from 1
    np.testing.assert_allclose([v for _, v in got],
                               [batches[s - 1]["loss"] for s in expected_steps], rtol=1e-6)
    assert "batch_accuracy" in train.Tags()["scalars"]
    assert "keras" not in train.Tags()["tensors"]


def test_batch_steps_per_second_with_batch_updates(tmp_path, xy):
    pytest.importorskip("tensorboardX")
    x, y = xy
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=2,
                                     write_steps_per_second=True)
    _model().fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    got = _scalars(_reader(str(tmp_path / "train")), "batch_steps_per_second")
    assert [s for s, _ in got] == [2, 4] and all(v > 0 for _, v in got)


def test_weight_histograms_images_and_steps_per_second(tmp_path, xy):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("PIL")
    x, y = xy
    model = _model()
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), histogram_freq=2, write_images=True,
                                     write_steps_per_second=True)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[cb])
    train = _reader(str(tmp_path / "train"))
    tags = train.Tags()
    names = [w.name.replace(":", "_") for layer in model.layers for w in layer.weights]
    assert names[0] == "dense/kernel_0"
    assert sorted(tags["histograms"]) == sorted(n + "/histogram" for n in names)
    assert sorted(tags["images"]) == sorted(n + "/image" for n in names)
    kernel = train.Histograms("dense_1/kernel_0/histogram")
    assert [e.step for e in kernel] == [0, 2]  # every histogram_freq epochs
    last = kernel[-1].histogram_value
    w = model.layers[1].kernel.numpy()
    assert last.num == w.size
    assert last.min == pytest.approx(float(w.min())) and last.max == pytest.approx(float(w.max()))
    assert last.sum == pytest.approx(float(w.sum()), rel=1e-5, abs=1e-6)
    assert "epoch_steps_per_second" in tags["scalars"]
    assert "batch_steps_per_second" not in tags["scalars"]  # per-batch needs update_freq
    assert not cb.implements_batch_hooks("train")
    assert all(v > 0 for _, v in _scalars(train, "epoch_steps_per_second"))


def test_lr_callbacks_show_up_as_scalars(tmp_path, xy):
    pytest.importorskip("tensorboardX")
    x, y = xy
    cbs = [keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1)),
           keras.callbacks.TensorBoard(log_dir=str(tmp_path))]
    _model().fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=cbs)
    train = _reader(str(tmp_path / "train"))
    np.testing.assert_allclose([v for _, v in _scalars(train, "epoch_learning_rate")],
                               [0.1, 0.05, 0.1 / 3], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in _scalars(train, "epoch_lr")], [0.1, 0.05, 0.1 / 3],
                               rtol=1e-6)


def test_a_second_fit_appends_and_training_is_unchanged(tmp_path, xy, monkeypatch):
    pytest.importorskip("tensorboardX")
    x, y = xy
    import itertools

    from fastckpt.callbacks import tensorboard as tb_module
    # From writer 9 on: the 10th file must still be read after the 9th (a full-suite run found
    # "....10.v2" sorting before "....9.v2" and the epochs read back out of order).
    monkeypatch.setattr(tb_module, "_WRITER_IDS", itertools.count(9))
    keras.utils.set_random_seed(3)
    a = _model()
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), histogram_freq=1,
                                     update_freq="batch")
    a.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False, callbacks=[cb])
    a.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, callbacks=[cb])
    keras.utils.set_random_seed(3)
    b = _model()
    b.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    b.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)  # side files only
    train = _reader(str(tmp_path / "train"))
    assert len(os.listdir(tmp_path / "train")) == 2  # one event file per fit
    assert [s for s, _ in _scalars(train, "epoch_loss")] == [0, 1, 0]


def test_arguments_checked_as_tf_keras(tmp_path):
    pytest.importorskip("tensorboardX")
    with pytest.raises(ValueError, match="Unrecognized arguments"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), bogus=1)
    with pytest.raises(ValueError, match="update_freq"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq="step")
    with pytest.raises(ValueError, match="profile_batch"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), profile_batch=(5, 2))
    with pytest.raises(ValueError, match="histogram_freq"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), histogram_freq=-1)
    with pytest.warns(UserWarning, match="profiler"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), profile_batch="2,4")
    with pytest.warns(UserWarning, match="write_grads"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), write_grads=True)


def test_missing_writer_is_a_clear_import_error(monkeypatch, tmp_path):
    import builtins
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "tensorboardX":
            raise ImportError("No module named 'tensorboardX'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert builtins  # the package itself imports without the writer (tested by importing it)
    with pytest.raises(ImportError, match=r"fastckpt\[tensorboard\]"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path))


def test_embeddings_projector_config_and_checkpoints(tmp_path, xy):
    pytest.importorskip("tensorboardX")
    x, y = xy

    class Embedding(keras.layers.Layer):  # stands in for keras.layers.Embedding: matched by name
        def build(self, input_shape):
            self.embeddings = self.add_weight("embeddings", (10, 2))

        def call(self, inputs, training=None):
            return inputs

    model = keras.Sequential([keras.layers.Dense(5, input_shape=(5,)), Embedding(name="emb")])
    model.build((None, 5))
    cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), embeddings_freq=1,
                                     embeddings_metadata={"emb": "words.tsv"})
    cb.set_model(model)
    text = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "layer_with_weights-1/embeddings/.ATTRIBUTES/VARIABLE_VALUE"' in text
    assert 'metadata_path: "words.tsv"' in text
    with pytest.raises(ValueError, match="Unrecognized `Embedding` layer names.*nope"):
        keras.callbacks.TensorBoard(log_dir=str(tmp_path), embeddings_freq=1,
                                    embeddings_metadata={"nope": "x.tsv"}).set_model(model)
    dense = _model()
    dense.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path / "d"), embeddings_freq=1)])
    saved = os.listdir(tmp_path / "d" / "train")
    assert any(f.startswith("keras_embedding.ckpt-0") for f in saved)
    assert any(f.startswith("keras_embedding.ckpt-1") for f in saved)
