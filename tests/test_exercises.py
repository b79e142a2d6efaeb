"""The exercise grader: every reference answer passes, every planted bug gets exactly its code.

PLANTED is the proof table: (exercise, source of the planted answer, the codes it must get).
A source defines some of the exercise's functions; the rest come from solutions.py, so each row
changes one thing. Rows with no codes are correct answers written differently from the
reference (loops, one-hot matrices, in-place updates in update()), which must pass.
"""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import torch

from chainrule import exercises
from chainrule.exercises import progress, runner, solutions
from chainrule.exercises.codes import CODES, NOTES
from chainrule.gradcheck import gradcheck_function


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Progress files go to a temporary XDG_DATA_HOME, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def planted(name: str, source: str) -> dict:
    """The solution's definitions for ``name``, with those ``source`` defines replacing them."""
    namespace = {"np": np, **{e: getattr(solutions, e) for e in exercises.get(name).entries}}
    exec(compile(textwrap.dedent(source), f"<planted {name}>", "exec"), namespace)
    return namespace


# ---------------------------------------------------------------------- the proof table
DENSE_LAYER = """
class DenseLayer:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, grad_z):
        self.grad_W = self.x.T @ grad_z
        self.grad_b = grad_z.sum(axis=0)
        {backward}

    def update(self, lr):
        {update}
"""


def dense_layer(backward="return grad_z @ self.W.T",
                update="self.W = self.W - lr * self.grad_W\n        "
                       "self.b = self.b - lr * self.grad_b") -> str:
    return DENSE_LAYER.format(backward=backward, update=update)


PLANTED = [
    # ------------------------------------------------------------------ chain_rule_scalar
    ("chain_rule_scalar", """
        def dL_dx(x):
            return -5 * (5 * x - 10 - 10)

        def descend(lr=0.01, steps=50):
            x = 0.0
            for _ in range(steps):
                x = x - lr * dL_dx(x)
            return x
        """, ["sign"]),
    ("chain_rule_scalar", """
        def dL_dx(x):
            return (5 * x - 10) - 10          # the inner derivative dy/dx = 5 forgotten

        def descend(lr=0.01, steps=50):
            x = 0.0
            for _ in range(steps):
                x = x - lr * dL_dx(x)
            return x
        """, ["scale"]),
    ("chain_rule_scalar", """
        def descend(lr=0.01, steps=50):
            x = 0.0
            for _ in range(min(steps, 10)):
                x = x - lr * dL_dx(x)
            return x
        """, ["mismatch"]),
    # ------------------------------------------------------------------ dense
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, grad_z.T @ x, grad_z.sum(axis=0)
        """, ["transposed"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, x.T @ grad_z, grad_z
        """, ["missing_sum"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, x.T @ grad_z, grad_z.sum(axis=1)
        """, ["missing_sum"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, x.T @ grad_z, grad_z.sum(axis=0, keepdims=True)
        """, ["shape"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return -(grad_z @ W.T), x.T @ grad_z, grad_z.sum(axis=0)
        """, ["sign"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, x.T @ grad_z / len(x), grad_z.sum(axis=0)
        """, ["batch_mean"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            grad_W = np.zeros_like(W)
            for d in range(W.shape[0] - 1):
                grad_W[d] = x[:, d] @ grad_z
            return grad_z @ W.T, grad_W, grad_z.sum(axis=0)
        """, ["partial"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            return grad_z @ W.T, x.T @ grad_z, grad_z.sum(axis=2)
        """, ["exception"]),
    ("dense", """
        def dense_backward(x, W, b, grad_z):
            grad_W = np.zeros_like(W)
            for d in range(W.shape[0]):
                for m in range(W.shape[1]):
                    grad_W[d, m] = sum(x[n, d] * grad_z[n, m] for n in range(len(x)))
            return grad_z @ W.T, grad_W, grad_z.sum(axis=0)
        """, []),
    # ------------------------------------------------------------------ activations
    ("relu", """
        def relu_forward(x):
            return np.maximum(x, 0), x

        def relu_backward(grad_y, x):
            return grad_y * (x >= 0)
        """, ["kink_convention"]),
    ("relu", """
        def relu_backward(grad_y, mask):
            return -grad_y * mask
        """, ["sign"]),
    ("relu", """
        def relu_forward(x):
            return np.maximum(x, 0), x

        def relu_backward(grad_y, x):
            grad_y[x <= 0] = 0
            return grad_y
        """, ["mutates_input"]),
    ("relu", """
        def relu_forward(x):
            return np.maximum(x, 0)
        """, ["shape"]),
    ("relu", """
        def relu_forward(x):
            return np.where(x > 0, x, 0.0), x

        def relu_backward(grad_y, x):
            return np.where(x > 0, grad_y, 0.0)
        """, []),
    ("leaky_relu", """
        def leaky_relu_forward(x, alpha):
            return np.where(x >= 0, x, alpha * x), (x, alpha)

        def leaky_relu_backward(grad_y, cache):
            x, alpha = cache
            return np.where(x >= 0, grad_y, alpha * grad_y)
        """, ["kink_convention"]),
    ("leaky_relu", """
        def leaky_relu_backward(grad_y, cache):
            mask, alpha = cache
            grad_y[~mask] *= alpha
            return grad_y
        """, ["mutates_input"]),
    ("sigmoid", """
        def sigmoid_forward(x):
            e = np.exp(x)
            y = e / (1 + e)
            return y, y
        """, ["unstable"]),
    ("sigmoid", """
        def sigmoid_forward(x):
            y = 1 / (1 + np.exp(-x))          # overflows to inf, but 1/inf is the right 0
            return y, y
        """, []),
    ("sigmoid", """
        def sigmoid_backward(grad_y, y):
            return -grad_y * y * (1 - y)
        """, ["sign"]),
    ("tanh", """
        def tanh_forward(x):
            y = (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))
            return y, y
        """, ["unstable"]),
    ("tanh", """
        def tanh_backward(grad_y, y):
            return grad_y * (1 - y)
        """, ["mismatch"]),
    # ------------------------------------------------------------------ softmax
    ("softmax", """
        def softmax_forward(z):
            e = np.exp(z)
            s = e / e.sum(axis=-1, keepdims=True)
            return s, s
        """, ["unstable"]),
    ("softmax", """
        def softmax_forward(z):
            e = np.exp(z - z.max(axis=0, keepdims=True))
            s = e / e.sum(axis=0, keepdims=True)
            return s, s

        def softmax_backward(grad_y, s):
            return s * (grad_y - (grad_y * s).sum(axis=0, keepdims=True))
        """, ["wrong_axis"]),
    ("softmax", """
        def softmax_backward(grad_y, s):
            return s * (grad_y - (grad_y * s).sum(axis=0))
        """, ["wrong_axis"]),
    ("softmax", """
        def softmax_backward(grad_y, s):
            grad_z = np.empty_like(grad_y)
            for n in range(len(s)):
                J = np.diag(s[n]) - np.outer(s[n], s[n])     # the (C, C) Jacobian
                grad_z[n] = J.T @ grad_y[n]
            return grad_z
        """, ["slow"]),
    ("softmax_cross_entropy", """
        _correct = softmax_cross_entropy

        def softmax_cross_entropy(z, y):
            loss, grad_z = _correct(z, y)
            return loss, grad_z * len(y)          # (s − Y), the 1/N forgotten
        """, ["batch_mean"]),
    ("softmax_cross_entropy", """
        _correct = softmax_cross_entropy

        def softmax_cross_entropy(z, y):
            loss, grad_z = _correct(z, y)
            return loss * len(y), grad_z          # a sum over the batch, not a mean
        """, ["batch_mean"]),
    ("softmax_cross_entropy", """
        def softmax_cross_entropy(z, y):
            n = len(y)
            s = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            grad = s.copy()
            grad[np.arange(n), y] -= 1
            return -np.log(s[np.arange(n), y]).mean(), grad / n
        """, ["unstable"]),
    ("softmax_cross_entropy", """
        def softmax_cross_entropy(z, y):
            n, c = z.shape
            Y = np.eye(c)[y]
            shifted = z - z.max(axis=1, keepdims=True)
            log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            return -(Y * log_s).sum() / n, (Y - np.exp(log_s)) / n
        """, ["sign"]),
    ("softmax_cross_entropy", """
        def softmax_cross_entropy(z, y):
            n = len(y)
            e = np.exp(z - z.max(axis=0, keepdims=True))
            s = e / e.sum(axis=0, keepdims=True)
            grad = s.copy()
            grad[np.arange(n), y] -= 1
            return -np.log(s[np.arange(n), y]).mean(), grad / n
        """, ["wrong_axis"]),
    ("softmax_cross_entropy", """
        def softmax_cross_entropy(z, y):
            n, c = z.shape
            Y = np.eye(c)[y]
            shifted = z - z.max(axis=1, keepdims=True)
            log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            return -(Y * log_s).sum() / n, (np.exp(log_s) - Y) / n
        """, []),
    ("mse", """
        def mse(pred, target):
            diff = pred - target
            return np.mean(diff ** 2), 2 * diff / diff.size
        """, ["scale"]),
    ("mse", """
        def mse(pred, target):
            diff = pred - target
            return 0.5 * np.sum(diff ** 2), diff
        """, ["batch_mean"]),
    ("mse", """
        def mse(pred, target):
            diff = pred - target
            return 0.5 * np.mean(diff ** 2), -diff / diff.size
        """, ["sign"]),
    ("mse", """
        def mse(pred, target):
            diff = pred - target
            return 0.5 * np.mean(diff ** 2), diff.ravel() / diff.size
        """, ["shape"]),
    ("mse", """
        def mse(pred, target):
            diff = pred - target          # a wrong loss: its factor changes from case to case
            return 0.3 * np.mean(diff ** 4), diff / diff.size
        """, ["mismatch"]),
    ("mse", """
        def mse(pred, target):
            diff = pred
            diff -= target
            return 0.5 * np.mean(diff ** 2), diff / diff.size
        """, ["mutates_input"]),
    # ------------------------------------------------------------------ networks
    ("mlp_backward", """
        def mlp_backward(x, y, W1, W2):
            h = x @ W1
            a = np.maximum(h, 0)
            z = a @ W2
            s = np.exp(z - z.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            grad_z = s.copy()
            grad_z[np.arange(len(y)), y] -= 1        # the 1/N of the mean forgotten
            return x.T @ ((grad_z @ W2.T) * (h > 0)), a.T @ grad_z
        """, ["batch_mean"]),
    ("mlp_backward", """
        def mlp_backward(x, y, W1, W2):
            h = x @ W1
            a = np.maximum(h, 0)
            z = a @ W2
            s = np.exp(z - z.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            grad_z = s.copy()
            grad_z[np.arange(len(y)), y] -= 1
            grad_z /= len(y)
            return x.T @ ((grad_z @ W2.T) * (h > 0)), grad_z.T @ a
        """, ["transposed"]),
    ("mlp_backward", """
        def mlp_backward(x, y, W1, W2):
            h = x @ W1
            a = np.maximum(h, 0)
            z = a @ W2
            s = np.exp(z - z.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            grad_z = -s
            grad_z[np.arange(len(y)), y] += 1
            grad_z /= len(y)
            return x.T @ ((grad_z @ W2.T) * (h > 0)), a.T @ grad_z
        """, ["sign"]),
    ("dense_layer", dense_layer(
        backward="self.update(0.1)\n        return grad_z @ self.W.T"), ["stale_weights"]),
    ("dense_layer", dense_layer(
        backward="grad_x = grad_z @ self.W.T\n        self.W -= 0.1 * self.grad_W\n"
                 "        return grad_x"), ["mutates_input"]),
    ("dense_layer", dense_layer(
        update="self.W = self.W + lr * self.grad_W\n        "
               "self.b = self.b + lr * self.grad_b"), ["sign"]),
    ("dense_layer", dense_layer(
        backward="self.grad_W = grad_z.T @ self.x\n        return grad_z @ self.W.T",
        update="self.W = self.W - lr * self.grad_W.T\n        "
               "self.b = self.b - lr * self.grad_b"), ["transposed"]),
    ("dense_layer", dense_layer(
        backward="self.grad_b = grad_z[0]\n        return grad_z @ self.W.T"), ["missing_sum"]),
    ("dense_layer", dense_layer(
        update="self.W -= lr * self.grad_W\n        self.b -= lr * self.grad_b"), []),
    ("batchnorm", """
        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
            return (gamma * grad_y / np.sqrt(x.var(axis=0) + eps),
                    (grad_y * x_hat).sum(axis=0), grad_y.sum(axis=0))
        """, ["mismatch"]),
    ("batchnorm", """
        _correct = batchnorm_backward

        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            grad_x, grad_gamma, _ = _correct(x, gamma, beta, grad_y, eps)
            return grad_x, grad_gamma, grad_y
        """, ["missing_sum"]),
    ("batchnorm", """
        _correct = batchnorm_backward

        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            grad_x, grad_gamma, grad_beta = _correct(x, gamma, beta, grad_y, eps)
            return grad_x, grad_gamma / len(x), grad_beta
        """, ["batch_mean"]),
    ("batchnorm", """
        _correct = batchnorm_backward

        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            grad_x, grad_gamma, grad_beta = _correct(x, gamma, beta, grad_y, eps)
            return grad_x, -grad_gamma, grad_beta
        """, ["sign"]),
    ("batchnorm", """
        _correct = batchnorm_backward

        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            out = _correct(x.copy(), gamma, beta, grad_y, eps)
            x -= x.mean(axis=0)
            return out
        """, ["mutates_input"]),
    ("batchnorm", """
        def batchnorm_backward(x, gamma, beta, grad_y, eps=1e-5):
            # CS231n's staged backward, one node of the graph at a time
            n = x.shape[0]
            mu = x.mean(axis=0)
            xc = x - mu
            var = (xc ** 2).mean(axis=0)
            std = np.sqrt(var + eps)
            x_hat = xc / std
            grad_xhat = grad_y * gamma
            grad_std = -(grad_xhat * xc).sum(axis=0) / std ** 2
            grad_var = 0.5 * grad_std / std
            grad_xc = grad_xhat / std + 2 * xc * grad_var / n
            grad_x = grad_xc - grad_xc.mean(axis=0)
            return grad_x, (grad_y * x_hat).sum(axis=0), grad_y.sum(axis=0)
        """, []),
    # ------------------------------------------------------------------ images
    ("conv2d", """
        _backward = conv2d_backward

        def conv2d_backward(grad_y, cache):
            grad_x, grad_W, _ = _backward(grad_y, cache)
            return grad_x, grad_W, grad_y.sum(axis=0)
        """, ["missing_sum"]),
    ("conv2d", """
        _backward = conv2d_backward

        def conv2d_backward(grad_y, cache):
            grad_x, grad_W, grad_b = _backward(grad_y, cache)
            return grad_x, grad_W.transpose(1, 0, 2, 3), grad_b
        """, ["transposed"]),
    ("conv2d", """
        _backward = conv2d_backward

        def conv2d_backward(grad_y, cache):
            xp, W, stride, pad = cache
            grad_x, grad_W, grad_b = _backward(grad_y, (xp, W, stride, 0))
            return grad_x, grad_W, grad_b          # the padding never cropped
        """, ["shape"]),
    ("conv2d", """
        _forward, _backward = conv2d_forward, conv2d_backward

        def conv2d_forward(x, W, b, stride, pad):
            return _forward(x, W[:, :, ::-1, ::-1], b, stride, pad)

        def conv2d_backward(grad_y, cache):
            grad_x, grad_W, grad_b = _backward(grad_y, cache)
            return grad_x, grad_W[:, :, ::-1, ::-1], grad_b
        """, ["mismatch"]),
    ("conv2d", """
        _backward = conv2d_backward

        def conv2d_backward(grad_y, cache):
            grad_x, grad_W, grad_b = _backward(grad_y, cache)
            return -grad_x, grad_W, grad_b
        """, ["sign"]),
    ("conv2d", """
        def conv2d_forward(x, W, b, stride, pad):
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            n, c, h, w = xp.shape
            f, _, kh, kw = W.shape
            y = np.zeros((n, f, (h - kh) // stride + 1, (w - kw) // stride + 1))
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    window = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[:, :, i, j] = np.einsum("nchw,fchw->nf", window, W) + b
            return y, (xp, W, stride, pad)

        def conv2d_backward(grad_y, cache):
            xp, W, stride, pad = cache
            f, _, kh, kw = W.shape
            grad_xp, grad_W = np.zeros_like(xp), np.zeros_like(W)
            for i in range(grad_y.shape[2]):
                for j in range(grad_y.shape[3]):
                    rows = slice(i * stride, i * stride + kh)
                    cols = slice(j * stride, j * stride + kw)
                    g = grad_y[:, :, i, j]
                    grad_W += np.einsum("nf,nchw->fchw", g, xp[:, :, rows, cols])
                    grad_xp[:, :, rows, cols] += np.einsum("nf,fchw->nchw", g, W)
            h, w = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
            grad_x = grad_xp[:, :, pad:pad + h, pad:pad + w]
            return grad_x, grad_W, grad_y.sum(axis=(0, 2, 3))
        """, []),
    ("conv2d", """
        def conv2d_forward(x, W, b, stride, pad):
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            n, c, h, w = xp.shape
            f, _, kh, kw = W.shape
            y = np.zeros((n, f, (h - kh) // stride + 1, (w - kw) // stride + 1))
            for a in range(n):
                for k in range(f):
                    for i in range(y.shape[2]):
                        for j in range(y.shape[3]):
                            window = xp[a, :, i * stride:i * stride + kh,
                                        j * stride:j * stride + kw]
                            y[a, k, i, j] = np.sum(window * W[k]) + b[k]
            return y, (xp, W, stride, pad)

        def conv2d_backward(grad_y, cache):
            xp, W, stride, pad = cache
            f, _, kh, kw = W.shape
            grad_xp, grad_W = np.zeros_like(xp), np.zeros_like(W)
            for a in range(grad_y.shape[0]):
                for k in range(f):
                    for i in range(grad_y.shape[2]):
                        for j in range(grad_y.shape[3]):
                            rows = slice(i * stride, i * stride + kh)
                            cols = slice(j * stride, j * stride + kw)
                            grad_W[k] += grad_y[a, k, i, j] * xp[a, :, rows, cols]
                            grad_xp[a, :, rows, cols] += grad_y[a, k, i, j] * W[k]
            h, w = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
            grad_x = grad_xp[:, :, pad:pad + h, pad:pad + w]
            return grad_x, grad_W, grad_y.sum(axis=(0, 2, 3))
        """, ["slow"]),
    ("maxpool2d", """
        _forward = maxpool2d_forward

        def maxpool2d_forward(x, pool, stride):
            y, _ = _forward(x, pool, stride)
            return y, (x, y, pool, stride)

        def maxpool2d_backward(grad_y, cache):
            x, y, pool, stride = cache
            grad_x = np.zeros_like(x)
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    rows = slice(i * stride, i * stride + pool)
                    cols = slice(j * stride, j * stride + pool)
                    top = x[:, :, rows, cols] == y[:, :, i, j, None, None]   # every maximum
                    grad_x[:, :, rows, cols] += top * grad_y[:, :, i, j, None, None]
            return grad_x
        """, ["kink_convention"]),
    ("maxpool2d", """
        _forward = maxpool2d_forward

        def maxpool2d_forward(x, pool, stride):
            y, _ = _forward(x, pool, stride)
            return y, (x, pool, stride)

        def maxpool2d_backward(grad_y, cache):
            x, pool, stride = cache
            n, c, h_out, w_out = grad_y.shape
            grad_x = np.zeros_like(x)
            for i in range(h_out):
                for j in range(w_out):
                    rows = slice(i * stride, i * stride + pool)
                    cols = slice(j * stride, j * stride + pool)
                    window = x[:, :, rows, cols].reshape(n, c, -1)
                    local = np.zeros_like(window)
                    first = window.argmax(axis=2)[..., None]
                    np.put_along_axis(local, first, grad_y[:, :, i, j, None], axis=2)
                    grad_x[:, :, rows, cols] = local.reshape(n, c, pool, pool)  # = for +=
            return grad_x
        """, ["partial"]),
    # ------------------------------------------------------------------ embedding
    ("embedding", """
        def embedding_backward(grad_y, cache):
            ids, shape = cache
            grad_W = np.zeros(shape)
            grad_W[ids] += grad_y
            return grad_W
        """, ["repeated_ids"]),
    ("embedding", """
        def embedding_backward(grad_y, cache):
            return grad_y
        """, ["shape"]),
    ("embedding", """
        def embedding_backward(grad_y, cache):
            ids, shape = cache
            grad_W = np.zeros(shape)
            for n in range(ids.shape[0]):
                for t in range(ids.shape[1]):
                    grad_W[ids[n, t]] += grad_y[n, t]
            return grad_W
        """, []),
    # ------------------------------------------------------------------ adam_step
    ("adam_step", """
        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad ** 2
            step = lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
            return param + step, m, v
        """, ["sign"]),
    ("adam_step", """
        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad ** 2
            step = lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
            return param - step, m, v
        """, ["mutates_input"]),
    ("adam_step", """
        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad ** 2
            return param - lr * m / (np.sqrt(v) + eps), m, v
        """, ["mismatch"]),
    ("adam_step", """
        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad ** 2
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            return param - lr * m_hat / np.sqrt(v_hat + eps), m, v
        """, ["mismatch"]),
    ("adam_step", """
        import math

        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps):
            # torch.optim.Adam's arrangement: step size and denominator corrected apart
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            step_size = lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
            return param - step_size * m / denom, m, v
        """, []),
]

TABLE_IDS = [f"{name}-{'+'.join(codes) or 'correct'}-{i}"
             for i, (name, _, codes) in enumerate(PLANTED)]


@pytest.mark.parametrize(("name", "source", "codes"), PLANTED, ids=TABLE_IDS)
def test_planted_answer_gets_exactly_its_codes(name, source, codes):
    result = exercises.check(name, planted(name, source))
    if codes:
        assert result.codes == codes, str(result)
    else:  # a correct answer: it passes; a slow one may carry the note
        assert result.ok and result.diagnosis == [] and set(result.notes) <= {"slow"}, \
            str(result)
    assert result.ok == (not set(codes) - set(NOTES)), str(result)
    for finding in result.findings:
        assert finding.code in result.codes and finding.detail


def test_the_table_covers_every_code_but_timeout():
    covered = {code for _, _, codes in PLANTED for code in codes}
    assert covered == set(CODES) - {"timeout"}  # timeout: test_endless_loop_is_stopped
    for name in exercises.names():
        assert any(row[0] == name for row in PLANTED), name


def test_endless_loop_is_stopped():
    started = time.monotonic()
    result = exercises.check("dense", planted("dense", """
        def dense_backward(x, W, b, grad_z):
            while True:
                pass
        """), time_limit=0.3)
    assert time.monotonic() - started < 5
    assert result.codes == ["timeout"] and not result.ok
    (finding,) = result.findings
    assert "0.3 s" in finding.detail and "case N=1, D=4, M=3" in finding.detail


# ---------------------------------------------------------------------- right answers pass
def row(name: str, codes: list[str]) -> str:
    """The source of the table's first row for ``name`` with ``codes``."""
    return next(src for n, src, c in PLANTED if n == name and c == codes)


@pytest.mark.parametrize("name", exercises.names())
def test_the_printed_solution_passes(name, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(exercises.solution(name))
    result = exercises.check(name, path)
    assert result.ok and result.codes == [], str(result)
    assert all(o.ok for o in result.outputs)
    assert len(result.cases) >= 3


@pytest.mark.parametrize("name", exercises.names())
def test_the_unfilled_template_reports_not_implemented(name, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(exercises.get(name).template())
    result = exercises.check(name, path)
    assert result.codes == ["exception"], str(result)
    assert all("NotImplementedError" in f.text for f in result.findings)
    assert "exception: your code raised an exception" in str(result)


@pytest.mark.parametrize("name", exercises.names())
def test_exercise_text(name):
    ex = exercises.get(name)
    assert ex.statement.strip() and ex.title and 2 <= len(ex.hints) <= 3
    assert exercises.hint(name) == ex.hints[0]
    assert exercises.hint(name, level=len(ex.hints)) == ex.hints[-1]
    template, answer = ex.template(), exercises.solution(name)
    for entry in ex.entries:
        assert (f"def {entry}(" in template) or (f"class {entry}" in template)
        assert entry in answer
    assert "NotImplementedError" in template and "NotImplementedError" not in answer
    assert '"""' in template.split("raise NotImplementedError")[0]  # the docstring stays
    compile(template, name, "exec")
    compile(answer, name, "exec")


def test_names_are_in_course_order():
    assert exercises.names() == [
        "chain_rule_scalar", "dense", "relu", "leaky_relu", "sigmoid", "tanh", "softmax",
        "softmax_cross_entropy", "mse", "mlp_backward", "dense_layer", "batchnorm", "conv2d",
        "maxpool2d", "embedding", "adam_step"]


def test_unknown_names_and_levels():
    with pytest.raises(exercises.UnknownExercise, match="did you mean 'dense'"):
        exercises.get("dnse")
    with pytest.raises(KeyError):
        exercises.check("nope", solutions)
    with pytest.raises(ValueError, match="level 1 to 3"):
        exercises.hint("dense", level=4)


# ---------------------------------------------------------------------- what the grader says
def test_report_shows_outputs_diagnosis_and_hint():
    text = str(exercises.check("dense", planted("dense", row("dense", ["missing_sum"]))))
    assert text.startswith("dense: FAILED — 1 of 3 outputs wrong")
    assert "grad_b  FAIL" in text and "shape (1, 3)" in text
    assert "missing_sum: a gradient is not summed over the batch" in text
    assert "grad_z itself, not summed over axis 0" in text
    assert "hint: a parameter shared by every sample" in text
    passed = str(exercises.check("dense", solutions))
    assert passed.startswith("dense: passed — every output equals the reference on 3 cases")


def test_outputs_name_the_worst_entry():
    result = exercises.check("relu", planted("relu", row("relu", ["sign"])))
    (y, grad_x) = result.outputs
    assert y.ok and not grad_x.ok
    assert grad_x.learner == pytest.approx(-grad_x.reference)
    assert grad_x.max_rel_error == pytest.approx(2.0) and grad_x.case.startswith("N=1")


def test_central_differences_of_the_learners_forward():
    wrong_backward = exercises.check("relu", planted("relu", row("relu", ["sign"])))
    assert [c.ok for c in wrong_backward.fd.checks] == [False]
    assert "your backward is not the derivative of your forward" in str(wrong_backward)
    wrong_forward = exercises.check("relu", planted("relu", """
        def relu_forward(x):
            return x * x, x

        def relu_backward(grad_y, x):
            return 2 * x * grad_y
        """))
    assert [c.ok for c in wrong_forward.fd.checks] == [True]
    assert "consistent with your forward: fix the forward first" in str(wrong_forward)


def test_exception_shows_the_learners_frames_only(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import numpy as np\n\n\ndef helper(a):\n    return a[5, 5]\n\n\n"
                    "def dense_backward(x, W, b, grad_z):\n    return helper(x)\n")
    result = exercises.check("dense", path)
    assert result.codes == ["exception"]
    (finding,) = result.findings  # the same error on every case, reported once
    assert "dense_backward raised IndexError" in finding.detail
    assert finding.case.startswith("N=1, D=4, M=3")
    assert 'mine.py", line 9, in dense_backward' in finding.text
    assert 'mine.py", line 5, in helper' in finding.text
    assert "return a[5, 5]" in finding.text and "IndexError" in finding.text
    assert "chainrule" not in finding.text and "runner.py" not in finding.text


@pytest.mark.parametrize("body", ["raise SystemExit(3)", "import os; os._exit(3)"])
def test_code_that_ends_the_process_is_reported(body):
    result = exercises.check("dense", planted("dense", f"""
        def dense_backward(x, W, b, grad_z):
            {body}
        """))
    assert result.codes == ["exception"] and not result.ok


def test_wrong_number_of_outputs_is_a_shape_diagnosis():
    result = exercises.check("dense", planted("dense", """
        def dense_backward(x, W, b, grad_z):
            return x.T @ grad_z, grad_z.sum(axis=0)
        """))
    assert result.codes == ["shape"]
    assert "returned 2 values, expected 3: (grad_x, grad_W, grad_b)" in str(result)


def test_the_in_process_fallback(monkeypatch):
    monkeypatch.setattr(runner, "fork_available", lambda: False)
    errors = np.geterr()
    assert exercises.check("dense", solutions).ok
    assert exercises.check("softmax", planted("softmax", row("softmax", ["unstable"]))).codes \
        == ["unstable"]
    assert np.geterr() == errors  # the overflow warnings were silenced for the grading only
    slow = exercises.check("dense", planted("dense", """
        import time

        def dense_backward(x, W, b, grad_z):
            time.sleep(0.2)
            return grad_z @ W.T, x.T @ grad_z, grad_z.sum(axis=0)
        """), time_limit=0.05)
    assert slow.codes == ["timeout"]


# ---------------------------------------------------------------------- solutions in any form
def test_solution_forms(tmp_path):
    pair = (solutions.relu_forward, solutions.relu_backward)
    assert exercises.check("relu", pair).ok
    assert exercises.check("relu", {"relu_forward": pair[0], "relu_backward": pair[1]}).ok
    assert exercises.check("relu", solutions).ok
    assert exercises.check("dense", solutions.dense_backward).ok
    assert exercises.check("dense_layer", solutions.DenseLayer).ok
    path = tmp_path / "mine.py"
    path.write_text(exercises.solution("relu"))
    assert exercises.check("relu", str(path)).ok
    with pytest.raises(exercises.SolutionError, match="relu needs relu_forward and "
                       "relu_backward"):
        exercises.check("relu", solutions.relu_forward)
    with pytest.raises(exercises.SolutionError, match="defines no relu_backward"):
        exercises.check("relu", {"relu_forward": pair[0]})
    with pytest.raises(exercises.SolutionError, match="no such file"):
        exercises.check("relu", tmp_path / "missing.py")


def test_files_that_cannot_be_graded(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy as np\n\ndef dense_backward(x, W, b, grad_z)\n    pass\n")
    with pytest.raises(exercises.SolutionError,
                       match=r"^broken.py does not import: SyntaxError: .* \(line 3\)$"):
        exercises.check("dense", broken)
    failing = tmp_path / "failing.py"
    failing.write_text("import numpy as np\n\nW = np.zeros(3) @ np.zeros(4)\n")
    with pytest.raises(exercises.SolutionError,
                       match=r"^failing.py does not import: ValueError: .* \(line 3\)$"):
        exercises.check("dense", failing)
    other = tmp_path / "other.py"
    other.write_text("def dense_forward(x):\n    return x\n")
    with pytest.raises(exercises.SolutionError, match="other.py defines no dense_backward"):
        exercises.check("dense", other)


# ---------------------------------------------------------------------- the machinery
def test_progress_is_recorded_only_when_asked(data_home):
    exercises.check("dense", solutions)
    assert not progress.path().exists()
    exercises.check("dense", solutions, record=True)
    exercises.check("relu", planted("relu", row("relu", ["sign"])), record=True)
    assert progress.path() == data_home / "chainrule" / "progress.json"
    entries = progress.load()
    assert entries["dense"]["last_ok"] and entries["dense"]["passed"]
    assert entries["relu"] == {"last_checked": entries["relu"]["last_checked"], "last_ok": False}
    assert list(progress.passed()) == ["dense"]
    assert progress.reset() and progress.load() == {} and not progress.reset()


def test_gradcheck_function_differentiates_any_scalar_function():
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    entry = gradcheck_function(lambda t: np.sum(np.sin(t) * t), x, np.cos(x) * x + np.sin(x))
    assert entry.ok and entry.checked == 6 and entry.max_rel_error < 1e-8
    wrong = gradcheck_function(lambda t: np.sum(t**3), x, 2 * x**2)
    assert wrong.failed == 6 and wrong.numeric == pytest.approx(3 * x.reshape(-1)[
        np.ravel_multi_index(wrong.worst_index, x.shape)] ** 2)
    kink = gradcheck_function(lambda t: np.sum(np.maximum(t, 0)), np.array([0.0, 1.0]),
                              np.array([1.0, 1.0]))
    assert kink.failed == 0 and kink.kinks == 1
    with pytest.raises(ValueError, match="shape"):
        gradcheck_function(np.sum, x, np.zeros(3))


# ---------------------------------------------------------------------- references agree with torch
def _case(name, label_start):
    return next(c for c in exercises.get(name).cases(np.random.default_rng(0))
                if c.label.startswith(label_start))


def test_adam_reference_is_torch_optim_adam():
    case = _case("adam_step", "five steps")
    i = case.inputs
    p = torch.tensor(i["param"], requires_grad=True)
    opt = torch.optim.Adam([p], lr=i["lr"], betas=(i["beta1"], i["beta2"]), eps=i["eps"])
    for g in i["grads"]:
        p.grad = torch.tensor(g)
        opt.step()
    ours = exercises.get("adam_step").reference(case)
    np.testing.assert_allclose(ours["param"], p.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours["v"], opt.state[p]["exp_avg_sq"].numpy(), rtol=1e-12)


def test_conv2d_and_maxpool_references_are_torch():
    import torch.nn.functional as TF

    case = _case("conv2d", "x (3, 2, 7, 6)")
    i = case.inputs
    x = torch.tensor(i["x"], requires_grad=True)
    W = torch.tensor(i["W"], requires_grad=True)
    b = torch.tensor(i["b"], requires_grad=True)
    y = TF.conv2d(x, W, b, stride=i["stride"], padding=i["pad"])
    (y * torch.tensor(i["grad_y"])).sum().backward()
    ours = exercises.get("conv2d").reference(case)
    for name, theirs in (("y", y), ("grad_x", x.grad), ("grad_W", W.grad), ("grad_b", b.grad)):
        np.testing.assert_allclose(ours[name], theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    case = _case("maxpool2d", "x (2, 2, 6, 4), pool 2, stride 2, tied")
    i = case.inputs
    x = torch.tensor(i["x"], requires_grad=True)
    y = TF.max_pool2d(x, i["pool"], i["stride"])
    (y * torch.tensor(i["grad_y"])).sum().backward()
    ours = exercises.get("maxpool2d").reference(case)
    np.testing.assert_array_equal(ours["grad_x"], x.grad.numpy())
    assert case.kinks["grad_x"].any()
