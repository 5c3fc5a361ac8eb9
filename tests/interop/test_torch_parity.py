"""One training step from identical weights matches PyTorch (CPU) within 1e-5."""

import numpy as np

from fastckpt import keras
from interop.conftest import require


def test_one_adam_step_matches_pytorch():
    torch = require("torch")
    torch.set_num_threads(2)
    rng = np.random.default_rng(3)
    x = rng.random((32, 784), dtype=np.float32)
    y = rng.integers(0, 10, 32)

    model = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    w1, b1, w2, b2 = model.get_weights()

    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1.T.copy()))
        net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(w2.T.copy()))
        net[2].bias.copy_(torch.from_numpy(b2))
    # Keras adds epsilon to sqrt(v) before bias correction, torch after: at step t the same
    # update needs torch_eps = keras_eps / sqrt(1 - beta_2**t). Tiny gradients (|g| ~ eps, there
    # are thousands here) would otherwise differ by up to ~7e-4.
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999),
                           eps=1e-7 / np.sqrt(1 - 0.999))
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    opt.zero_grad()
    loss.backward()
    opt.step()

    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert abs(hist.history["loss"][0] - loss.item()) < 1e-5
    got = model.get_weights()
    want = [net[0].weight.detach().numpy().T, net[0].bias.detach().numpy(),
            net[2].weight.detach().numpy().T, net[2].bias.detach().numpy()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
