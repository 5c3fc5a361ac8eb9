"""Native kernels against NumPy references and finite differences.

Tolerances: forward float32 vs float64 reference 1e-5 relative to magnitude; gradients by central
differences in float64 around float32 kernels, 2e-3 relative (float32 rounding of the loss
dominates); Adam trajectories 1e-5 absolute after each of 5 steps.
"""

import numpy as np
import pytest

from fastckpt import ops

ACTS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "softmax": lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True),
}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (32, 784, 512), (33, 17, 130)])
def test_dense_forward_matches_numpy(rng, act, shape):
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y = np.empty((m, n), np.float32)
    ops.dense_forward(x, w, b, y, act)
    ref = ACTS[act](x.astype(np.float64) @ w.astype(np.float64) + b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_dense_forward_without_bias(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    y = np.empty((4, 3), np.float32)
    ops.dense_forward(x, w, None, y, "linear")
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def _loss_of_dense(x, w, b, act, r):
    """Scalar loss sum(r * act(xW + b)) computed in float32 by the kernel."""
    y = np.empty((x.shape[0], w.shape[1]), np.float32)
    ops.dense_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), y, act)
    return float((y.astype(np.float64) * r).sum())


@pytest.mark.parametrize("act", list(ACTS))
def test_dense_backward_matches_finite_differences(rng, act):
    m, k, n = 4, 5, 3
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    if act == "relu":  # keep pre-activations away from the kink
        z = x @ w + b
        b += np.where(np.abs(z).min(0) < 0.05, 0.2, 0).astype(np.float32)
    r = rng.standard_normal((m, n))
    y = np.empty((m, n), np.float32)
    ops.dense_forward(x, w, b, y, act)
    dy = r.astype(np.float32)
    dz = np.empty_like(y)
    dw = np.empty_like(w)
    db = np.empty_like(b)
    dx = np.empty_like(x)
    ops.dense_backward(x, w, y, dy, dz, dw, db, dx, act)

    def numgrad(arr, f):
        g = np.zeros(arr.shape)
        h = 1e-2
        for idx in np.ndindex(arr.shape):
            orig = arr[idx]
            arr[idx] = orig + h
            fp = f()
            arr[idx] = orig - h
            fm = f()
            arr[idx] = orig
            g[idx] = (fp - fm) / (2 * h)
        return g

    f = lambda: _loss_of_dense(x, w, b, act, r)  # noqa: E731
    np.testing.assert_allclose(dw, numgrad(w, f), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(db, numgrad(b, f), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(dx, numgrad(x, f), rtol=2e-3, atol=2e-3)


def test_dense_backward_large_matches_numpy(rng):
    m, k, n = 32, 784, 512
    x = rng.random((m, k), dtype=np.float32)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    b = np.zeros(n, np.float32)
    y = np.empty((m, n), np.float32)
    ops.dense_forward(x, w, b, y, "relu")
    dy = rng.standard_normal((m, n)).astype(np.float32)
    dz, dw, db, dx = np.empty_like(y), np.empty_like(w), np.empty_like(b), np.empty_like(x)
    ops.dense_backward(x, w, y, dy, dz, dw, db, dx, "relu")
    g = dy.astype(np.float64) * (y > 0)
    np.testing.assert_allclose(dw, x.T.astype(np.float64) @ g, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, g @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,k,n,act", [(128, 256, 256, "relu"), (128, 20, 256, "relu"),
                                       (128, 512, 512, "linear"), (32, 256, 2, "linear"),
                                       (128, 256, 512, "gelu")])
def test_dense_backward_bits_do_not_depend_on_thread_count(rng, m, k, n, act):
    # The breadth workloads' shapes: on two threads dW and dx run as two whole products side by
    # side, on one thread unsplit; every output keeps its bits. (Three threads are left out:
    # gemm's 48-row blocks of the 128x20x256 dx product round differently from one 128-row
    # call under OpenBLAS, a property of gemm's split, not of this kernel.)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) * 0.1).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    outs = []
    before = ops.num_threads()
    try:
        for t in (1, 2):
            ops.set_num_threads(t)
            z, y = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
            ops.dense_forward_z(x, w, b, z, y, act)
            dz, dw, dx = np.zeros_like(y), np.full_like(w, 0.5), np.empty_like(x)
            db = np.full_like(b, 0.25)
            ops.dense_backward_z(x, w, z, y, dy, dz, dw, db, dx, act, accumulate=True)
            outs.append((y, dz, dw, db, dx))
    finally:
        ops.set_num_threads(before)
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            np.testing.assert_array_equal(a, c)
    g = (dy if act == "linear" else outs[0][1]).astype(np.float64)  # linear: dz is dy itself
    np.testing.assert_allclose(outs[0][2], 0.5 + x.T.astype(np.float64) @ g, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs[0][3], 0.25 + g.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs[0][4], g @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.random((32, 784), dtype=np.float32)
    w = rng.random((784, 512), dtype=np.float32)
    b = rng.random(512, dtype=np.float32)
    dy = rng.random((32, 512), dtype=np.float32)
    outs = []
    before = ops.num_threads()
    try:
        for t in (1, 2, 3):
            ops.set_num_threads(t)
            y = np.empty((32, 512), np.float32)
            ops.dense_forward(x, w, b, y, "relu")
            dz, dw, db, dx = np.empty_like(y), np.empty_like(w), np.empty_like(b), np.empty_like(x)
            ops.dense_backward(x, w, y, dy, dz, dw, db, dx, "relu")  # dW splits rows, dx columns
            outs.append((y, dw, db, dx))
    finally:
        ops.set_num_threads(before)
    for other in outs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(outs[0], other))



# --- BLAS provider (cmake/blas.cmake: FASTCKPT_BLAS=scipy-openblas | mkl-static | system) ---------
# Bit-exactness is only ever claimed within one provider: these compare runs of the same build.


def test_build_names_its_blas_provider():
    info = ops.build_info()
    blas, config = info["blas"], info["blas_config"]
    assert blas.split(" ")[0] in ("scipy-openblas32", "mkl-static", "system"), blas
    if blas.startswith("scipy-openblas32"):
        assert "OpenBLAS" in config, config
    elif blas.startswith("mkl-static"):
        assert blas.endswith(" sequential"), blas  # fastckpt runs the threads, MKL must not
        assert "Math Kernel Library" in config, config


def _at_offset(a, offset):
    """A copy of a starting `offset` floats into a fresh buffer (16-byte misalignment and worse)."""
    buf = np.empty(a.size + 16, np.float32)
    view = buf[offset:offset + a.size].reshape(a.shape)
    view[...] = a
    return view


@pytest.mark.parametrize("m,k,n,trans_a", [(32, 784, 512, False), (784, 32, 512, True),
                                           (1000, 784, 512, False), (33, 100, 65, False), (7, 13, 5, False)])
def test_gemm_bits_do_not_depend_on_alignment_or_thread_count(rng, m, k, n, trans_a):
    # MKL without its CNR mode may pick a code path by the operands' alignment; fastckpt's
    # reproducibility (checkpoint resume, thread count) needs the same bits either way.
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    before = ops.num_threads()
    results = {}
    try:
        for threads in (1, 2, 3):
            ops.set_num_threads(threads)
            for off in (0, 1, 3, 8):
                c = _at_offset(np.zeros((m, n), np.float32), (5 * off) % 16)
                ops.gemm(_at_offset(a, off), _at_offset(b, (3 * off) % 16), c, trans_a=trans_a)
                results[threads, off] = c.copy()
    finally:
        ops.set_num_threads(before)
    first = results[1, 0]
    assert [key for key, c in results.items() if not np.array_equal(c, first)] == []

# --- loss ------------------------------------------------------------------------------------

def _ce_ref(pred, labels, from_logits):
    p = pred.astype(np.float64)
    if from_logits:
        lse = np.log(np.exp(p - p.max(1, keepdims=True)).sum(1)) + p.max(1)
        return lse - p[np.arange(len(labels)), labels]
    c = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(c.sum(1)) - np.log(c[np.arange(len(labels)), labels])


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_ce_forward_and_grad(rng, from_logits):
    m, n = 8, 5
    z = rng.standard_normal((m, n)).astype(np.float32)
    pred = z if from_logits else (np.exp(z) / np.exp(z).sum(1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, n, m).astype(np.int32)
    losses = np.empty(m, np.float32)
    grad = np.empty((m, n), np.float32)
    correct, total = ops.sparse_ce(pred, labels, from_logits, 1e-7, losses=losses, grad=grad,
                                   grad_scale=1.0 / m)
    np.testing.assert_allclose(losses, _ce_ref(pred, labels, from_logits), rtol=1e-5, atol=1e-6)
    assert total == sum(float(v) for v in losses)  # double sum in row order
    assert correct == int((pred.argmax(1) == labels).sum())
    h = 1e-3
    num = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            p2 = pred.astype(np.float64).copy()
            p2[i, j] += h
            fp = _ce_ref(p2, labels, from_logits).mean()
            p2[i, j] -= 2 * h
            fm = _ce_ref(p2, labels, from_logits).mean()
            num[i, j] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=2e-3, atol=2e-4)


def test_sparse_ce_rejects_out_of_range_label_in_native_layer():
    pred = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError):
        ops.sparse_ce(pred, np.array([0, 3], np.int32), True, 1e-7)


# --- optimizers ------------------------------------------------------------------------------

def _adam_ref(var, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, amsgrad=False):
    var = var.astype(np.float64).copy()
    m = np.zeros_like(var)
    v = np.zeros_like(var)
    vh = np.zeros_like(var)
    out = []
    for t, g in enumerate(grads, start=1):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        if amsgrad:
            vh = np.maximum(vh, v)
            var -= alpha * m / (np.sqrt(vh) + eps)
        else:
            var -= alpha * m / (np.sqrt(v) + eps)
        out.append(var.copy())
    return out


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_matches_reference_over_five_steps(rng, amsgrad):
    n = 100_003  # odd size, large enough to take the threaded path
    var = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) * s for s in (1.0, 0.1, 3.0, 0.5, 1.0)]
    ref = _adam_ref(var, [g.astype(np.float64) for g in grads], lr=0.01, amsgrad=amsgrad)
    m, v = np.zeros_like(var), np.zeros_like(var)
    vh = np.zeros_like(var) if amsgrad else None
    for t, (g, r) in enumerate(zip(grads, ref), start=1):
        ops.adam_update(var, g, m, v, vh, 0.01, 0.9, 0.999, 1e-7, amsgrad, t)
        np.testing.assert_allclose(var, r, rtol=0, atol=1e-5)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_reference(rng, momentum, nesterov):
    var = rng.standard_normal(1000).astype(np.float32)
    ref = var.astype(np.float64).copy()
    mbuf = np.zeros_like(var)
    mref = np.zeros_like(ref)
    for _ in range(4):
        g = rng.standard_normal(1000).astype(np.float32)
        ops.sgd_update(var, g, mbuf if momentum else None, 0.1, momentum, nesterov)
        if momentum == 0:
            ref -= 0.1 * g
        else:
            mref = momentum * mref - 0.1 * g
            ref += momentum * mref - 0.1 * g if nesterov else mref
    np.testing.assert_allclose(var, ref, atol=1e-5)


# --- dropout ---------------------------------------------------------------------------------

def test_philox_known_answer():
    # Random123's published known-answer vector for Philox4x32-10 with counter and key all ones.
    out = ops._core.philox4x32(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
    assert out == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)


def test_dropout_statistics_and_scaling():
    n = 1_000_000
    x = np.ones(n, np.float32)
    y = np.empty_like(x)
    mask = np.empty(n, np.uint8)
    ops.dropout_forward(x, y, mask, 0.2, 7, 0)
    keep = mask.mean()
    assert abs(keep - 0.8) < 0.002  # ~5 sigma for a binomial of 1e6 draws
    np.testing.assert_allclose(y[mask == 1], 1 / 0.8, rtol=1e-6)
    assert np.all(y[mask == 0] == 0)
    assert abs(y.mean() - 1.0) < 0.005  # inverted dropout keeps the expectation
    dx = np.empty_like(x)
    ops.dropout_backward(x, mask, dx, 0.2)
    np.testing.assert_array_equal(dx, y)


def test_dropout_is_deterministic_and_offset_addressable():
    x = np.arange(1000, dtype=np.float32)
    y1, y2, y3 = (np.empty_like(x) for _ in range(3))
    m1, m2, m3 = (np.empty(1000, np.uint8) for _ in range(3))
    ops.dropout_forward(x, y1, m1, 0.5, 99, 0)
    ops.dropout_forward(x, y2, m2, 0.5, 99, 0)
    assert np.array_equal(m1, m2)
    # Drawing the second half alone at offset 500 gives the same bits as the full draw.
    ops.dropout_forward(x[500:].copy(), y3[:500], m3[:500], 0.5, 99, 500)
    assert np.array_equal(m3[:500], m1[500:])
    ops.dropout_forward(x, y3, m3, 0.5, 100, 0)
    assert not np.array_equal(m1, m3)


def test_kernels_flush_denormals_and_leave_numpy_ieee():
    """Denormals cost ~100 cycles each on x86; the kernels flush them (as TensorFlow does) and
    restore the caller's floating-point mode, so NumPy still produces them."""
    tiny = np.finfo(np.float32).tiny
    n = 200_000
    var = np.zeros(n, np.float32)
    m = np.full(n, tiny * 1.05, np.float32)
    v = np.ones(n, np.float32)
    g = np.zeros(n, np.float32)
    ops.adam_update(var, g, m, v, None, 1e-3, 0.9, 0.999, 1e-7, False, 1)
    # IEEE would give m = 0.945 * tiny, a denormal; flushed, the decay step itself underflows.
    assert not np.any((m != 0) & (np.abs(m) < tiny))
    x = np.float32(tiny) / np.float32(4)
    assert 0 < x < tiny  # NumPy after the kernel call: IEEE denormals as usual


@pytest.mark.parametrize("offset", [0, 1, 3, 4097])
def test_dropout_mask_is_philox_per_element(offset):
    """Element i keeps iff lane (offset+i)%4 of Philox(counter=(offset+i)//4, key=seed) >> 8 is at
    least rate * 2^24 — whatever batching or threading the kernel uses inside."""
    n, seed, rate = 200_003, 0x1234_5678_9ABC_DEF0, 0.3
    x = np.ones(n, np.float32)
    y = np.empty_like(x)
    mask = np.empty(n, np.uint8)
    ops.dropout_forward(x, y, mask, rate, seed, offset)
    idx = np.r_[0:50, n // 2 - 25:n // 2 + 25, n - 50:n]
    threshold = int(rate * (1 << 24))
    for i in idx:
        c = offset + int(i)
        lanes = ops._core.philox4x32(c >> 2, 0, seed)
        assert mask[i] == ((lanes[c & 3] >> 8) >= threshold), i


def test_inference_pass_rows_is_whole_batches_of_at_least_256_rows():
    from fastckpt import ops
    assert [ops.inference_pass_rows(b) for b in (1, 7, 32, 256, 300)] == [256, 259, 256, 256, 300]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ops.inference_pass_rows(0)


def test_non_finite_values_through_activations_and_dense():
    # What fastckpt.h states for fckpt_model_predict (the same kernels): NaN is not "NaN out"
    # everywhere. ReLU keeps x only when x > 0, so NaN becomes 0; linear, sigmoid and tanh keep
    # NaN; softmax turns a row holding a NaN or +inf into an all-NaN row (-inf gets 0); sigmoid
    # and tanh saturate at +-inf.
    nan, inf = np.float32("nan"), np.float32("inf")
    row = np.array([[nan, -inf, inf, 1.0]], np.float32)
    relu = ops.activation_forward("relu", row.copy())
    np.testing.assert_array_equal(relu, [[0.0, 0.0, inf, 1.0]])
    for act in ("linear", "sigmoid", "tanh"):
        out = ops.activation_forward(act, row.copy())
        assert np.isnan(out[0, 0]), act
    np.testing.assert_array_equal(ops.activation_forward("sigmoid", row.copy())[0, 1:3], [0.0, 1.0])
    np.testing.assert_array_equal(ops.activation_forward("tanh", row.copy())[0, 1:3], [-1.0, 1.0])
    assert np.isnan(ops.activation_forward("softmax", row.copy())).all()
    assert np.isnan(ops.activation_forward("softmax", row[:, 1:].copy())).all()  # +inf: inf - inf
    np.testing.assert_allclose(ops.activation_forward("softmax", np.array([[-inf, 0.0, 0.0]], np.float32)),
                               [[0.0, 0.5, 0.5]])
    # Dense: one NaN input makes every unit of its row NaN before the activation, so a ReLU layer
    # outputs zeros for that row; other rows are unaffected.
    x = np.array([[nan, 1.0], [1.0, 2.0]], np.float32)
    w = np.array([[1.0, -1.0, 0.5], [2.0, 1.0, -3.0]], np.float32)
    b = np.array([0.1, 0.2, 0.3], np.float32)
    out = np.empty((2, 3), np.float32)
    ops.dense_forward(x, w, b, out, "relu")
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1], np.maximum(x[1] @ w + b, 0), rtol=1e-6)
    ops.dense_forward(x, w, b, out, "linear")
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


@pytest.mark.parametrize("activation", ["gelu_erf", "", None, 3])
def test_unknown_activation_is_a_typed_error_naming_the_choices(activation):
    x = np.zeros((2, 3), np.float32)
    kernel = np.zeros((3, 4), np.float32)
    out = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="Expected activation to be one of .*relu"):
        ops.dense_forward(x, kernel, None, out, activation)
    with pytest.raises(ValueError, match="Expected activation to be one of"):
        ops.activation_forward(activation, out)


def _gelu_reference(x):
    """gelu and its derivative in float64: x Phi(x), Phi(x) + x phi(x), Phi from math.erfc (no
    cancellation in the left tail)."""
    import math

    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(np.float64)])
    pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def _ulps(got, ref):
    ref32 = ref.astype(np.float32)
    ulp = np.spacing(np.abs(ref32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / ulp


def test_gelu_is_accurate_to_a_few_ulps_on_both_tails():
    # Every 4099th float32 pattern in [-12.5, 14] plus a dense run near 0 (~250k points): gelu(x)
    # within 8 ulp of the float64 reference everywhere, including the left tail where the output is
    # tiny (the previous erfc fit was off by 36 ulp at x = -4.9 and 283 ulp at x = -12.7).
    pos = np.arange(0x2F800000, 0x41600000, 4099, dtype=np.uint32).view(np.float32)  # 2^-32 .. 14
    x = np.concatenate([pos, -pos[pos <= 12.5], np.linspace(-1, 1, 20001, dtype=np.float32)])
    x = x.reshape(1, -1).copy()
    y = ops.activation_forward_out("gelu", x, np.empty_like(x))
    ref, dref = _gelu_reference(x[0])
    assert _ulps(y[0], ref).max() <= 8.0
    dz = ops.activation_backward_z("gelu", x, y, np.ones_like(x), np.empty_like(x))
    # The derivative crosses zero near x = -0.75, so it is checked in absolute terms.
    assert np.abs(dz[0] - dref).max() <= 3e-7


def test_gelu_edge_values():
    x = np.array([[0.0, -0.0, 20.0, -20.0, np.inf, np.nan, -13.9, 13.9]], np.float32)
    y = ops.activation_forward_out("gelu", x, np.empty_like(x))
    assert y[0, 0] == 0 and y[0, 1] == 0 and y[0, 2] == 20.0 and y[0, 3] == 0.0
    assert y[0, 4] == np.inf and np.isnan(y[0, 5])
    assert -1e-38 < y[0, 6] <= 0 and y[0, 7] == np.float32(13.9)
    dz = ops.activation_backward_z("gelu", x, y, np.ones_like(x), np.empty_like(x))
    np.testing.assert_allclose(dz[0, [0, 1, 2, 3, 6, 7]], [0.5, 0.5, 1.0, 0.0, 0.0, 1.0], atol=1e-7)
