"""The tutorial's model on a real, offline dataset (UCI digits shaped like MNIST)."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.demo import create_model


@pytest.fixture(autouse=True)
def _sklearn():
    pytest.importorskip("sklearn")  # the digits; per test, so a required run fails loudly


def test_tutorial_model_learns_real_digits():
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train = x_train[:1000].reshape(-1, 784).astype(np.float32) / 255.0
    y_train = y_train[:1000]
    x_test = x_test.reshape(-1, 784).astype(np.float32) / 255.0
    model = create_model()  # the tutorial's create_model(), as the demo runs it
    model.fit(x_train, y_train, epochs=10, verbose=0)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert acc > 0.90, acc
    assert np.isfinite(loss)


def test_demo_runs(capsys, tmp_path):
    from fastckpt import demo
    result = demo.run(workdir=str(tmp_path), epochs=3, verbose=0)
    assert result["trained"] > 0.8
    assert result["checkpoint"] == result["trained"] == result["save_weights"]
    for name in ("saved_model/my_model", "my_model.h5", "my_model.keras"):
        assert result[name] == result["trained"], name
    out = capsys.readouterr().out
    assert "Trained model, accuracy" in out and "[identical]" in out and "DIFFERENT" not in out
    assert (tmp_path / "training_1" / "checkpoint").exists()
