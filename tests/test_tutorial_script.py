"""The tutorial, run as a user would (imports changed), on a local mnist.npz: no network.

The file is made from the real UCI digits (scikit-learn) in MNIST's layout and placed where
``keras.datasets.mnist.load_data`` looks for it, so the tutorial's download step finds it cached.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


@pytest.fixture(autouse=True)
def _sklearn():
    pytest.importorskip("sklearn")  # the digits; per test, so a required run fails loudly


@pytest.mark.slow
def test_tutorial_runs_with_imports_changed(tmp_path):
    from fastckpt.datasets import digits
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    keras_home = tmp_path / "keras_home"
    (keras_home / "datasets").mkdir(parents=True)
    np.savez(keras_home / "datasets" / "mnist.npz", x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, KERAS_HOME=str(keras_home))
    out = subprocess.run([sys.executable, os.path.join(HERE, "data", "tutorial_save_and_load.py")],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "Total params: 407,050" in text
    assert "Epoch 10: saving model to training_1/cp.ckpt" in text
    assert "['checkpoint', 'cp.ckpt.data-00000-of-00001', 'cp.ckpt.index']" in text
    assert "training_2/cp-0050.ckpt" in text
    assert "['assets', 'fastckpt_model.json', 'variables']" in text
    assert re.search(r"^\(\d+, 10\)$", text, re.M)  # predict on the held-out images
    restored = [float(v) for v in re.findall(r"Restored model, accuracy: +([\d.]+)%", text)]
    assert len(restored) == 5 and min(restored) > 85.0
    untrained = float(re.search(r"Untrained model, accuracy: +([\d.]+)%", text).group(1))
    assert untrained < 40.0
