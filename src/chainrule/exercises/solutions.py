"""Correct answers to the exercises, written the way a learner fills in the templates.

``Exercise.template()`` shows each definition's signature and docstring with the body replaced
by ``raise NotImplementedError``, so the docstrings here are the learner's instructions.
``exercises.solution(name)`` prints the whole definitions. The grader never calls these: its
truth is chainrule's own layers, losses and optimizers; the tests prove these pass.
"""

import numpy as np


# ---------------------------------------------------------------------- chain_rule_scalar
def dL_dx(x):
    """dL/dx at the number x, for y = 5x − 10 and L = ½ (y − 10)².

    Returns:
        a float.
    """
    y = 5.0 * x - 10.0
    dL_dy = y - 10.0  # d/dy ½ (y − 10)²
    dy_dx = 5.0  # d/dx (5x − 10)
    return dL_dy * dy_dx


def descend(lr=0.01, steps=50):
    """Gradient descent on L from x = 0: `steps` times x ← x − lr · dL/dx (use dL_dx).

    Returns:
        the final x, a float.
    """
    x = 0.0
    for _ in range(steps):
        x = x - lr * dL_dx(x)
    return x


# ---------------------------------------------------------------------- dense
def dense_backward(x, W, b, grad_z):
    """The gradients of z = x W + b, given grad_z = dL/dz.

    Args:
        x: (N, D), the layer's input.
        W: (D, M).
        b: (M,).
        grad_z: (N, M).

    Returns:
        (grad_x, grad_W, grad_b) of shapes (N, D), (D, M) and (M,).
    """
    grad_x = grad_z @ W.T
    grad_W = x.T @ grad_z
    grad_b = grad_z.sum(axis=0)
    return grad_x, grad_W, grad_b


# ---------------------------------------------------------------------- activations
def relu_forward(x):
    """y = max(x, 0), element-wise.

    Args:
        x: (N, D).

    Returns:
        (y, cache): y of x's shape, and whatever relu_backward needs.
    """
    mask = x > 0
    return x * mask, mask


def relu_backward(grad_y, cache):
    """dL/dx = dL/dy where x > 0, else 0 (also at x = 0 exactly, as PyTorch).

    Args:
        grad_y: (N, D), dL/dy.
        cache: the second value relu_forward returned.

    Returns:
        grad_x, (N, D). grad_y must stay unchanged.
    """
    return grad_y * cache


def leaky_relu_forward(x, alpha):
    """y = x where x > 0, α x elsewhere.

    Args:
        x: (N, D).
        alpha: α, the slope for x ≤ 0.

    Returns:
        (y, cache).
    """
    mask = x > 0
    return np.where(mask, x, alpha * x), (mask, alpha)


def leaky_relu_backward(grad_y, cache):
    """dL/dx = dL/dy where x > 0, α dL/dy elsewhere (α at x = 0 exactly, as PyTorch).

    Args:
        grad_y: (N, D).
        cache: from leaky_relu_forward.

    Returns:
        grad_x, (N, D).
    """
    mask, alpha = cache
    return np.where(mask, grad_y, alpha * grad_y)


def sigmoid_forward(x):
    """y = σ(x) = 1 / (1 + e^(−x)), element-wise, finite and right for |x| up to 1e4.

    Args:
        x: (N, D).

    Returns:
        (y, cache).
    """
    e = np.exp(-np.abs(x))  # at most 1: never overflows
    y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return y, y


def sigmoid_backward(grad_y, cache):
    """dL/dx = dL/dy · σ(x) (1 − σ(x)).

    Args:
        grad_y: (N, D).
        cache: from sigmoid_forward.

    Returns:
        grad_x, (N, D).
    """
    y = cache
    return grad_y * y * (1.0 - y)


def tanh_forward(x):
    """y = tanh(x), element-wise, finite and right for |x| up to 1e4.

    Args:
        x: (N, D).

    Returns:
        (y, cache).
    """
    y = np.tanh(x)
    return y, y


def tanh_backward(grad_y, cache):
    """dL/dx = dL/dy · (1 − tanh²(x)).

    Args:
        grad_y: (N, D).
        cache: from tanh_forward.

    Returns:
        grad_x, (N, D).
    """
    y = cache
    return grad_y * (1.0 - y * y)


# ---------------------------------------------------------------------- softmax and losses
def softmax_forward(z):
    """s = softmax(z) over each row, finite for logits of ±1000.

    Args:
        z: (N, C) logits.

    Returns:
        (s, cache): s of shape (N, C), each row summing to 1.
    """
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # the largest exponent is exp(0) = 1
    s = e / e.sum(axis=-1, keepdims=True)
    return s, s


def softmax_backward(grad_y, cache):
    """dL/dz from grad_y = dL/ds: the Jacobian diag(s) − s sᵀ applied to each row.

    Args:
        grad_y: (N, C), dL/ds.
        cache: from softmax_forward.

    Returns:
        grad_z, (N, C).
    """
    s = cache
    # Σᵢ gᵢ sᵢ (δᵢⱼ − sⱼ) = sⱼ (gⱼ − ⟨g, s⟩): no (C, C) matrix needed.
    return s * (grad_y - (grad_y * s).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(z, y):
    """The mean cross-entropy of softmax(z) against integer labels, and dL/dz.

    Args:
        z: (N, C) logits, possibly ±1000.
        y: (N,) integer labels in [0, C).

    Returns:
        (loss, grad_z): a float and an (N, C) array.
    """
    n = z.shape[0]
    rows = np.arange(n)
    shifted = z - z.max(axis=1, keepdims=True)
    log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_s[rows, y].mean()
    grad_z = np.exp(log_s)
    grad_z[rows, y] -= 1.0
    return loss, grad_z / n


def mse(pred, target):
    """L = ½ · the mean over all entries of (pred − target)², and dL/dpred.

    Args:
        pred: (N, D).
        target: (N, D).

    Returns:
        (loss, grad_pred): a float and an (N, D) array.
    """
    diff = pred - target
    return 0.5 * np.mean(diff * diff), diff / diff.size


# ---------------------------------------------------------------------- networks
def mlp_backward(x, y, W1, W2):
    """The gradients of the mean NLL loss of the notebooks' network, by W1 and W2.

    x → Matmul(W1) → ReLU → Matmul(W2) → Softmax → Log → mean NLL against y.

    Args:
        x: (N, D).
        y: (N,) integer labels in [0, C).
        W1: (D, H).
        W2: (H, C).

    Returns:
        (grad_W1, grad_W2) of shapes (D, H) and (H, C).
    """
    n = x.shape[0]
    h = x @ W1
    a = np.maximum(h, 0.0)
    z = a @ W2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    grad_z = e / e.sum(axis=1, keepdims=True)
    grad_z[np.arange(n), y] -= 1.0  # softmax, log and NLL together: (s − Y) / N
    grad_z /= n
    grad_W2 = a.T @ grad_z
    grad_h = (grad_z @ W2.T) * (h > 0)
    grad_W1 = x.T @ grad_h
    return grad_W1, grad_W2


class DenseLayer:
    """z = x W + b as a layer object: forward, then backward, then update.

    Keeps the weights as self.W (D, M) and self.b (M,); backward sets self.grad_W and
    self.grad_b.
    """

    def __init__(self, W, b):
        """Keep W (D, M) and b (M,) as self.W and self.b."""
        self.W = W
        self.b = b

    def forward(self, x):
        """z = x W + b for x of shape (N, D); keep what backward needs. Returns z, (N, M)."""
        self.x = x
        return x @ self.W + self.b

    def backward(self, grad_z):
        """Set self.grad_W (D, M) and self.grad_b (M,) from grad_z (N, M) and return grad_x
        (N, D), all with the forward-time weights. Change no weight here."""
        self.grad_W = self.x.T @ grad_z
        self.grad_b = grad_z.sum(axis=0)
        return grad_z @ self.W.T

    def update(self, lr):
        """One step of gradient descent: W ← W − lr · grad_W, b ← b − lr · grad_b."""
        self.W = self.W - lr * self.grad_W
        self.b = self.b - lr * self.grad_b


def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
    """The gradients of training-mode batch normalisation, per feature over the batch.

    Args:
        x: (N, D).
        gamma: (D,), γ.
        beta: (D,), β.
        grad_y: (N, D), dL/dy.
        eps: ε.

    Returns:
        (grad_x, grad_gamma, grad_beta) of shapes (N, D), (D,) and (D,).
    """
    n = x.shape[0]
    mu = x.mean(axis=0)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=0) + eps)
    x_hat = (x - mu) * inv_std
    grad_beta = grad_y.sum(axis=0)
    grad_gamma = (grad_y * x_hat).sum(axis=0)
    # μ and σ depend on every xₙ: dL/dx = (γ / (N σ)) (N g − Σ g − x̂ Σ g x̂)
    grad_x = (gamma * inv_std / n) * (n * grad_y - grad_beta - x_hat * grad_gamma)
    return grad_x, grad_gamma, grad_beta


def embedding_forward(ids, W):
    """y[n, t] = W[ids[n, t]], the rows of the table W.

    Args:
        ids: (N, T) integers in [0, V).
        W: (V, E).

    Returns:
        (y, cache): y of shape (N, T, E).
    """
    return W[ids], (ids, W.shape)


def embedding_backward(grad_y, cache):
    """dL/dW: row v collects grad_y at every position whose id is v.

    Args:
        grad_y: (N, T, E).
        cache: from embedding_forward.

    Returns:
        grad_W, (V, E).
    """
    ids, shape = cache
    grad_W = np.zeros(shape)
    np.add.at(grad_W, ids.reshape(-1), grad_y.reshape(-1, shape[1]))  # repeats add up
    return grad_W


# ---------------------------------------------------------------------- images
def conv2d_forward(x, W, b, stride, pad):
    """2-D cross-correlation over NCHW images (PyTorch's conv2d), zero padding on every side.

    Args:
        x: (N, C, H, W).
        W: (F, C, kh, kw).
        b: (F,).
        stride: s, an int.
        pad: p, an int.

    Returns:
        (y, cache): y of shape (N, F, H′, W′), H′ = (H + 2p − kh) // s + 1 (W′ likewise).
    """
    n, _, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h_out = (h + 2 * pad - kh) // stride + 1
    w_out = (w + 2 * pad - kw) // stride + 1
    y = np.zeros((n, f, h_out, w_out)) + b[:, None, None]
    for u in range(kh):
        for v in range(kw):
            # tap (u, v) of every window: the pixels x̃[:, :, s·i + u, s·j + v]
            tap = xp[:, :, u:u + stride * h_out:stride, v:v + stride * w_out:stride]
            y += np.einsum("nchw,fc->nfhw", tap, W[:, :, u, v])
    return y, (xp, W, stride, pad)


def conv2d_backward(grad_y, cache):
    """The gradients of conv2d_forward.

    Args:
        grad_y: (N, F, H′, W′).
        cache: from conv2d_forward.

    Returns:
        (grad_x, grad_W, grad_b) of the shapes of x, W and b.
    """
    xp, W, stride, pad = cache
    _, _, h_out, w_out = grad_y.shape
    _, _, kh, kw = W.shape
    grad_xp = np.zeros_like(xp)
    grad_W = np.zeros_like(W)
    for u in range(kh):
        for v in range(kw):
            rows = slice(u, u + stride * h_out, stride)
            cols = slice(v, v + stride * w_out, stride)
            grad_W[:, :, u, v] = np.einsum("nfhw,nchw->fc", grad_y, xp[:, :, rows, cols])
            grad_xp[:, :, rows, cols] += np.einsum("nfhw,fc->nchw", grad_y, W[:, :, u, v])
    grad_b = grad_y.sum(axis=(0, 2, 3))
    h, w = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
    return grad_xp[:, :, pad:pad + h, pad:pad + w], grad_W, grad_b


def maxpool2d_forward(x, pool, stride):
    """y[n, c, i, j] = the largest value of the pool × pool window at (s·i, s·j); no padding.

    Args:
        x: (N, C, H, W).
        pool: k, the window's side.
        stride: s.

    Returns:
        (y, cache): y of shape (N, C, H′, W′), H′ = (H − k) // s + 1 (W′ likewise).
    """
    n, c, h, w = x.shape
    h_out, w_out = (h - pool) // stride + 1, (w - pool) // stride + 1
    windows = np.empty((pool * pool, n, c, h_out, w_out))
    for u in range(pool):
        for v in range(pool):
            windows[u * pool + v] = x[:, :, u:u + stride * h_out:stride,
                                      v:v + stride * w_out:stride]
    first_max = windows.argmax(axis=0)  # on a tie the first maximum, as PyTorch
    y = np.take_along_axis(windows, first_max[None], axis=0)[0]
    return y, (x.shape, first_max, pool, stride)


def maxpool2d_backward(grad_y, cache):
    """dL/dx: each window's gradient goes to its maximum (the first one on a tie); a pixel that
    is the maximum of several overlapping windows collects each one's.

    Args:
        grad_y: (N, C, H′, W′).
        cache: from maxpool2d_forward.

    Returns:
        grad_x, (N, C, H, W).
    """
    shape, first_max, pool, stride = cache
    _, _, h_out, w_out = grad_y.shape
    grad_x = np.zeros(shape)
    for u in range(pool):
        for v in range(pool):
            grad_x[:, :, u:u + stride * h_out:stride, v:v + stride * w_out:stride] += (
                grad_y * (first_max == u * pool + v))
    return grad_x


# ---------------------------------------------------------------------- optimizers
def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
    """One step of Adam, as torch.optim.Adam takes it.

    Args:
        param: the parameter, any shape.
        grad: its gradient, param's shape.
        m: the first moment, param's shape (zeros before the first step).
        v: the second moment, param's shape (zeros before the first step).
        t: this step's number, 1 for the first.
        lr: the learning rate.
        beta1: β₁.
        beta2: β₂.
        eps: ε.

    Returns:
        (param, m, v) after the step, as new arrays (leave the inputs unchanged).
    """
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1**t)
    v_hat = v / (1.0 - beta2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
