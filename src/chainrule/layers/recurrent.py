"""Recurrent layers: RNN (tanh Elman), LSTM and GRU, with PyTorch's gates and parameters.

All three read x of shape (N, T, D) and carry a hidden state h (N, H) through the T steps.
Backward is backpropagation through time (BPTT): one reverse loop over the steps carries
dL/dh (and dL/dc) from step t to step t − 1; everything that does not depend on the order of
the steps runs once, outside the loops, as one matrix product over all N·T rows:

    before the forward loop   x W_ih + b_ih for every step at once               (N·T, G·H)
    inside the loops          h_{t−1} W_hh, the gates, their derivatives          (N, G·H)
    after the backward loop   dL/dW_ih = Σₜ x_tᵀ dA_t,  dL/dW_hh = Σₜ h_{t−1}ᵀ dA'_t,
                              dL/db = Σₜ Σₙ dA_t,  dL/dx = dA W_ihᵀ                  (one GEMM each)

where G is the number of gate blocks (1 for RNN, 4 for LSTM, 3 for GRU) and dA_t (dA'_t) is
the gradient with respect to the input-side (hidden-side) pre-activations of step t.

Parameter layout. chainrule's Dense stores W as (in, out) and computes x W; the recurrent
layers do the same, so that every step reads like a Dense layer on row vectors:

    W_ih (D, G·H),  W_hh (H, G·H),  b_ih (G·H,),  b_hh (G·H,)

with the gate blocks side by side in PyTorch's order (columns k·H … (k+1)·H − 1 hold gate k).
PyTorch stores ``weight_ih_l0`` as (G·H, D) and computes x Wᵀ, so torch's weight is our W
transposed and the biases are the same vectors::

    torch.nn.LSTM(D, H, batch_first=True).weight_ih_l0 = W_ih.T    (and weight_hh_l0 = W_hh.T)
    bias_ih_l0 = b_ih,  bias_hh_l0 = b_hh

The two biases are kept separately, as in torch, even where they only enter as a sum (RNN,
LSTM: their gradients are then equal): GRU needs b_hn apart, and copying weights from torch
stays one line per tensor. Initialisation is torch's: every entry U(−1/√H, 1/√H).

Initial state. By default h₀ = 0 (and c₀ = 0), so the layers work inside a Sequential. Two
other choices:

- ``learn_initial_state=True``: h₀ (and c₀) are Parameters of shape (H,), shared by every
  sequence (broadcast over the batch), trained like the weights: dL/dh₀ = Σₙ dL/dh₀[n].
- ``layer.forward(x, training, initial_state=h0)`` (LSTM: ``initial_state=(h0, c0)``), arrays
  of shape (N, H), for one call (an encoder's final state handed to a decoder). After a
  backward, ``layer.initial_state_grad`` holds dL/dh₀ (LSTM: (dL/dh₀, dL/dc₀)), as torch's
  ``h0.grad``. A given state takes precedence over a learned one for that call.

Output: the hidden state of every step, (N, T, H), with ``return_sequences=True``; only the last
one, h_T (N, H), otherwise (Keras's default; torch returns both, ``out`` and ``h_n``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from .arguments import received_shape
from .base import Layer, check_finite


class _Recurrent(Layer):
    """What RNN, LSTM and GRU share: parameters, input checks, the initial state and the GEMMs
    outside the time loops. Subclasses set ``GATES`` and ``STATES`` and write the loops."""

    #: G, the number of H-wide gate blocks in W_ih, W_hh, b_ih and b_hh.
    GATES = 1
    #: The carried states: ("h",), or ("h", "c") for LSTM.
    STATES = ("h",)

    def __init__(self, units: int, return_sequences: bool = False,
                 learn_initial_state: bool = False, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        kind = type(self).__name__
        if not isinstance(units, int | np.integer) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{kind}: units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.learn_initial_state = bool(learn_initial_state)
        self.W_ih: Parameter | None = None
        self.W_hh: Parameter | None = None
        self.b_ih: Parameter | None = None
        self.b_hh: Parameter | None = None
        self.h0: Parameter | None = None
        self.c0: Parameter | None = None
        self.initial_state_grad = None
        self._given_state = None
        self._state_params: list[Parameter] = []

    # ------------------------------------------------------------------ build and checks
    def _build(self, input_shape, rng):
        d, h, width = input_shape[-1], self.units, self.GATES * self.units
        bound = 1.0 / math.sqrt(h)

        def uniform(shape):
            u = rng.random(shape, dtype=self.dtype)
            u *= 2.0 * bound
            u -= bound
            return u

        self.W_ih = Parameter(uniform((d, width)), "W_ih")
        self.W_hh = Parameter(uniform((h, width)), "W_hh")
        self.b_ih = Parameter(uniform((width,)), "b_ih")
        self.b_hh = Parameter(uniform((width,)), "b_hh")
        self._params = [self.W_ih, self.W_hh, self.b_ih, self.b_hh]
        self._state_params = []
        if self.learn_initial_state:
            self._state_params = [Parameter(np.zeros(h, dtype=self.dtype), f"{s}0")
                                  for s in self.STATES]
            self._params += self._state_params
        self.h0 = self._state_params[0] if self._state_params else None
        self.c0 = self._state_params[1] if len(self._state_params) > 1 else None

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], self.units)
        return (self.units,)

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) != 2:
            hint = ""
            if len(shape) == 1:
                hint = "; add a time axis: x.reshape(N, T, D), or x[:, :, None] for one feature"
            raise ValueError(
                f"{self.label} expected input of shape (N, T, features), got input of shape "
                f"{received}{hint}"
            )
        if self.built:
            self.check_size(shape, -1, self.W_ih.value.shape[0], "features on the last axis",
                            received)

    def forward(self, x, training: bool = False, initial_state=None) -> np.ndarray:
        """Run the recurrence over the T steps of ``x`` (N, T, D); see the class for the formulas.

        Args:
            x: the input sequences.
            training: cache what backward needs.
            initial_state: None (zeros, or the learned state), or the state at t = 0 for this
                call: h₀ of shape (N, H) (LSTM: a pair (h₀, c₀)) in the layer's dtype.

        Raises:
            TypeError / ValueError: for an input (or initial state) of the wrong dtype or shape.
        """
        x = self._validate_input(x)
        self._given_state = self._check_initial_state(initial_state, x.shape[0])
        try:
            return self.apply(x, training)
        finally:
            self._given_state = None

    __call__ = forward

    def _check_initial_state(self, state, n: int):
        if state is None:
            return None
        names = [f"{s}₀" for s in self.STATES]
        arrays = list(state) if len(self.STATES) > 1 else [state]
        if len(self.STATES) > 1 and (isinstance(state, np.ndarray) or len(arrays) != 2):
            raise TypeError(
                f"{self.label}: initial_state must be a pair (h0, c0) of arrays of shape "
                f"({n}, {self.units}), got {type(state).__name__}"
            )
        checked = []
        for label, a in zip(names, arrays, strict=True):
            a = np.asarray(a)
            if a.dtype != self.dtype:
                raise TypeError(
                    f"{self.label}: initial state {label} must have the layer's dtype "
                    f"{self.dtype}, got {a.dtype}"
                )
            if a.shape != (n, self.units):
                raise ValueError(
                    f"{self.label}: initial state {label} must have shape ({n}, "
                    f"{self.units}) (batch, units), got {a.shape}"
                )
            check_finite(a, f"{self.label} (initial state {label})")
            checked.append(a)
        return tuple(checked)

    # ------------------------------------------------------------------ shared math
    def _initial(self, n: int) -> tuple[np.ndarray, ...]:
        """The states at t = 0 as (N, H) arrays: given, learned (broadcast) or zeros."""
        if self._given_state is not None:
            return self._given_state
        if self._state_params:
            return tuple(np.broadcast_to(p.value, (n, self.units)) for p in self._state_params)
        return tuple(np.zeros((n, self.units), dtype=self.dtype) for _ in self.STATES)

    def _time_major(self, x: np.ndarray) -> np.ndarray:
        """x (N, T, D) as a contiguous (T, N, D) copy: each step's rows are then contiguous."""
        return np.ascontiguousarray(x.transpose(1, 0, 2))

    def _output(self, hs: np.ndarray) -> np.ndarray:
        """(N, T, H) of h₁ … h_T, or h_T (N, H), from the time-major states hs (T + 1, N, H)."""
        if self.return_sequences:
            return np.ascontiguousarray(hs[1:].transpose(1, 0, 2))
        return hs[-1].copy()

    def _upstream(self, grad_y: np.ndarray) -> np.ndarray | None:
        """dL/dh_t from the layer's output as (T, N, H), or None when only h_T is output."""
        if self.return_sequences:
            return grad_y.transpose(1, 0, 2)
        return None

    def _finish(self, xt, hs_prev, dA_in, dA_hid, d_states, need_input_grad):
        """The GEMMs outside the time loop: every parameter gradient and dL/dx.

        Args:
            xt: the input, time-major (T, N, D).
            hs_prev: h₀ … h_{T−1}, time-major (T, N, H).
            dA_in, dA_hid: dL/d(x W_ih + b_ih) and dL/d(h W_hh + b_hh) for every step (T, N, G·H);
                the same array for RNN and LSTM.
            d_states: dL/dh₀ (and dL/dc₀), (N, H) each.
        """
        d, width = xt.shape[-1], dA_in.shape[-1]
        rows_in = dA_in.reshape(-1, width)
        rows_hid = dA_hid.reshape(-1, width)
        self.W_ih.grad = xt.reshape(-1, d).T @ rows_in
        self.W_hh.grad = hs_prev.reshape(-1, self.units).T @ rows_hid
        self.b_ih.grad = np.sum(rows_in, axis=0)
        self.b_hh.grad = np.sum(rows_hid, axis=0)
        for p, grad in zip(self._state_params, d_states, strict=False):
            p.grad = np.sum(grad, axis=0)
        self.initial_state_grad = d_states[0] if len(d_states) == 1 else tuple(d_states)
        if not need_input_grad:
            return None
        return np.ascontiguousarray((dA_in @ self.W_ih.value.T).transpose(1, 0, 2))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "learn_initial_state": self.learn_initial_state,
        }


class RNN(_Recurrent):
    """Elman recurrent layer with tanh, as ``torch.nn.RNN(D, H, batch_first=True)``.

    Shapes: x (N, T, D), h_t (N, H); W_ih (D, H), W_hh (H, H), b_ih, b_hh (H,); y (N, T, H) with
    ``return_sequences``, else h_T (N, H). See the module docstring for layouts and h₀.

    Forward, t = 1 … T:
        a_t = x_t W_ih + b_ih + h_{t−1} W_hh + b_hh
        h_t = tanh(a_t)

    Backward (BPTT), with g_t = dL/dh_t from the output (0 for t < T without return_sequences)
    and δ_t the total gradient reaching h_t:
        δ_T = g_T,   δ_{t−1} = g_{t−1} + dA_t W_hhᵀ
        dA_t = dL/da_t = δ_t ⊙ (1 − h_t²)
        dL/dW_ih = Σₜ x_tᵀ dA_t,   dL/dW_hh = Σₜ h_{t−1}ᵀ dA_t,   dL/db_ih = dL/db_hh = Σₜ Σₙ dA_t
        dL/dx_t = dA_t W_ihᵀ,   dL/dh₀ = dA_1 W_hhᵀ

    Derivation: h_{t−1} reaches the loss through the output at t − 1 and through a_t, whose
    Jacobian with respect to h_{t−1} is W_hhᵀ (row-vector convention, as in Dense), hence the
    sum in δ_{t−1}; tanh′ = 1 − tanh². Each weight is used at every step, so its gradient is
    the sum over steps of the Dense-like terms.

    Cache (training only): x (time-major) and h₀ … h_T; the derivative 1 − h_t² is recomputed
    from h_t in backward, so no pre-activation is stored.

    Args:
        units: H, the size of the hidden state.
        return_sequences: output every h_t (N, T, H) instead of h_T (N, H).
        learn_initial_state: learn h₀ (H,) instead of starting from zeros.
    """

    def _forward(self, x, training):
        xt = self._time_major(x)
        steps, n = xt.shape[:2]
        xw = xt @ self.W_ih.value  # every step's input projection, one GEMM
        xw += self.b_ih.value + self.b_hh.value
        hs = np.empty((steps + 1, n, self.units), dtype=self.dtype)
        hs[0] = self._initial(n)[0]
        W_hh = self.W_hh.value
        for t in range(steps):
            a = xw[t]
            a += hs[t] @ W_hh
            np.tanh(a, out=hs[t + 1])
        if training:
            self.cache = (xt, hs)
        return self._output(hs)

    def _backward(self, grad_y, need_input_grad):
        xt, hs = self.cache
        steps = xt.shape[0]
        g = self._upstream(grad_y)
        W_hh_T = self.W_hh.value.T
        dA = np.empty((steps, xt.shape[1], self.units), dtype=self.dtype)
        delta = (g[-1] if g is not None else grad_y).copy()
        for t in range(steps - 1, -1, -1):
            h = hs[t + 1]
            np.multiply(delta, 1.0 - h * h, out=dA[t])
            delta = dA[t] @ W_hh_T
            if g is not None and t > 0:
                delta += g[t - 1]
        return self._finish(xt, hs[:-1], dA, dA, [delta], need_input_grad)


class LSTM(_Recurrent):
    """Long short-term memory, as ``torch.nn.LSTM(D, H, batch_first=True)``: gates i, f, g, o.

    Shapes: x (N, T, D); h_t, c_t (N, H); W_ih (D, 4H), W_hh (H, 4H), b_ih, b_hh (4H,), column
    blocks [i | f | g | o] (torch's order); y (N, T, H) or h_T (N, H).

    Forward, t = 1 … T, with a_t = x_t W_ih + b_ih + h_{t−1} W_hh + b_hh split into four blocks:
        i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
        c_t = f ⊙ c_{t−1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)

    Backward (BPTT), with g_t = dL/dh_t from the output, δ_t the total gradient reaching h_t and
    γ_t the one reaching c_t (δ_T = g_T, γ_T from h_T only):
        dL/do = δ_t ⊙ tanh(c_t)
        γ_t ← γ_t + δ_t ⊙ o ⊙ (1 − tanh²(c_t))          (c_t reaches L through h_t and c_{t+1})
        dL/di = γ_t ⊙ g,   dL/dg = γ_t ⊙ i,   dL/df = γ_t ⊙ c_{t−1}
        dA_t = [dL/di ⊙ i(1 − i) | dL/df ⊙ f(1 − f) | dL/dg ⊙ (1 − g²) | dL/do ⊙ o(1 − o)]
        γ_{t−1} = γ_t ⊙ f,   δ_{t−1} = g_{t−1} + dA_t W_hhᵀ
        dL/dW_ih = Σₜ x_tᵀ dA_t,   dL/dW_hh = Σₜ h_{t−1}ᵀ dA_t,   dL/db_ih = dL/db_hh = Σₜ Σₙ dA_t
        dL/dx_t = dA_t W_ihᵀ,   dL/dh₀ = δ₀,   dL/dc₀ = γ₀

    Derivation: c_t = f ⊙ c_{t−1} + i ⊙ g is linear in each of f, i, g and c_{t−1} (the other
    factors held fixed), which gives the four products; h_t = o ⊙ tanh(c_t) gives dL/do and
    the second path into c_t. σ′ = σ(1 − σ) and tanh′ = 1 − tanh² turn the gate gradients into
    pre-activation gradients, which W_hhᵀ carries to h_{t−1}.

    Cache (training only): x (time-major), h₀ … h_T, c₀ … c_T and the activated gates
    [i f g o] of every step (T, N, 4H); tanh(c_t) is recomputed in backward (one tanh per step)
    rather than stored.

    Args:
        units: H.  return_sequences, learn_initial_state: see RNN (the latter learns h₀ and c₀).
    """

    GATES = 4
    STATES = ("h", "c")

    def _forward(self, x, training):
        xt = self._time_major(x)
        steps, n = xt.shape[:2]
        H = self.units
        xw = xt @ self.W_ih.value
        xw += self.b_ih.value + self.b_hh.value
        h0, c0 = self._initial(n)
        hs = np.empty((steps + 1, n, H), dtype=self.dtype)
        cs = np.empty((steps + 1, n, H), dtype=self.dtype)
        gates = np.empty((steps, n, 4 * H), dtype=self.dtype)
        hs[0], cs[0] = h0, c0
        W_hh = self.W_hh.value
        for t in range(steps):
            a = xw[t]
            a += hs[t] @ W_hh
            act = gates[t]
            act[...] = F.sigmoid(a)  # i, f and o; the g block is overwritten with tanh
            np.tanh(a[:, 2 * H:3 * H], out=act[:, 2 * H:3 * H])
            i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
            c = cs[t + 1]
            np.multiply(f, cs[t], out=c)
            c += i * g
            np.multiply(o, np.tanh(c), out=hs[t + 1])
        if training:
            self.cache = (xt, hs, cs, gates)
        return self._output(hs)

    def _backward(self, grad_y, need_input_grad):
        xt, hs, cs, gates = self.cache
        steps, n = xt.shape[:2]
        H = self.units
        g_out = self._upstream(grad_y)
        W_hh_T = self.W_hh.value.T
        dA = np.empty((steps, n, 4 * H), dtype=self.dtype)
        delta = (g_out[-1] if g_out is not None else grad_y).copy()
        gamma = np.zeros((n, H), dtype=self.dtype)
        for t in range(steps - 1, -1, -1):
            act = gates[t]
            i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
            tc = np.tanh(cs[t + 1])
            gamma += delta * o * (1.0 - tc * tc)
            d = dA[t]
            np.multiply(gamma * g, i * (1.0 - i), out=d[:, :H])
            np.multiply(gamma * cs[t], f * (1.0 - f), out=d[:, H:2 * H])
            np.multiply(gamma * i, 1.0 - g * g, out=d[:, 2 * H:3 * H])
            np.multiply(delta * tc, o * (1.0 - o), out=d[:, 3 * H:])
            gamma *= f
            delta = d @ W_hh_T
            if g_out is not None and t > 0:
                delta += g_out[t - 1]
        return self._finish(xt, hs[:-1], dA, dA, [delta, gamma], need_input_grad)


class GRU(_Recurrent):
    """Gated recurrent unit, as ``torch.nn.GRU(D, H, batch_first=True)``: gates r, z, n.

    Shapes: x (N, T, D), h_t (N, H); W_ih (D, 3H), W_hh (H, 3H), b_ih, b_hh (3H,), column blocks
    [r | z | n] (torch's order); y (N, T, H) or h_T (N, H).

    Forward, t = 1 … T, with the two projections kept apart (the reset gate multiplies only the
    hidden-side one of the candidate, bias included, as in torch and cuDNN):
        u = x_t W_ih + b_ih = [u_r | u_z | u_n],   v = h_{t−1} W_hh + b_hh = [v_r | v_z | v_n]
        r = σ(u_r + v_r),   z = σ(u_z + v_z)
        n = tanh(u_n + r ⊙ v_n)
        h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

    Backward (BPTT), with δ_t the total gradient reaching h_t (δ_T = g_T):
        dL/dn = δ_t ⊙ (1 − z),   dL/dz = δ_t ⊙ (h_{t−1} − n)
        dL/da_n = dL/dn ⊙ (1 − n²),   dL/dr = dL/da_n ⊙ v_n
        dL/da_r = dL/dr ⊙ r(1 − r),   dL/da_z = dL/dz ⊙ z(1 − z)
        dU_t = [dL/da_r | dL/da_z | dL/da_n]                   (gradient of u)
        dV_t = [dL/da_r | dL/da_z | dL/da_n ⊙ r]               (gradient of v)
        δ_{t−1} = g_{t−1} + δ_t ⊙ z + dV_t W_hhᵀ
        dL/dW_ih = Σₜ x_tᵀ dU_t,   dL/db_ih = Σₜ Σₙ dU_t,   dL/dx_t = dU_t W_ihᵀ
        dL/dW_hh = Σₜ h_{t−1}ᵀ dV_t,   dL/db_hh = Σₜ Σₙ dV_t,   dL/dh₀ = δ₀

    Derivation: h_t = n + z ⊙ (h_{t−1} − n) gives dL/dn = δ(1 − z), dL/dz = δ(h_{t−1} − n) and
    the direct path δ ⊙ z into h_{t−1}. In n = tanh(u_n + r ⊙ v_n) the pre-activation a_n is
    linear in u_n (factor 1), in v_n (factor r) and in r (factor v_n): that is why the n block
    of dV carries the extra r, and why b_hn's gradient differs from b_in's while the r and z
    blocks of the two biases get equal gradients.

    Cache (training only): x (time-major), h₀ … h_T, and per step r, z, n and v_n (T, N, H) each.

    Args:
        units: H.  return_sequences, learn_initial_state: see RNN.
    """

    GATES = 3

    def _forward(self, x, training):
        xt = self._time_major(x)
        steps, n_rows = xt.shape[:2]
        H = self.units
        u_all = xt @ self.W_ih.value
        u_all += self.b_ih.value
        hs = np.empty((steps + 1, n_rows, H), dtype=self.dtype)
        hs[0] = self._initial(n_rows)[0]
        keep = np.empty((4, steps, n_rows, H), dtype=self.dtype)  # r, z, n, v_n
        W_hh, b_hh = self.W_hh.value, self.b_hh.value
        for t in range(steps):
            u = u_all[t]
            v = hs[t] @ W_hh
            v += b_hh
            rz = F.sigmoid(u[:, :2 * H] + v[:, :2 * H])
            r, z = rz[:, :H], rz[:, H:]
            n = np.tanh(u[:, 2 * H:] + r * v[:, 2 * H:])
            h = hs[t + 1]
            np.subtract(hs[t], n, out=h)
            h *= z
            h += n
            keep[0, t], keep[1, t], keep[2, t], keep[3, t] = r, z, n, v[:, 2 * H:]
        if training:
            self.cache = (xt, hs, keep)
        return self._output(hs)

    def _backward(self, grad_y, need_input_grad):
        xt, hs, keep = self.cache
        steps, n_rows = xt.shape[:2]
        H = self.units
        g_out = self._upstream(grad_y)
        W_hh_T = self.W_hh.value.T
        dU = np.empty((steps, n_rows, 3 * H), dtype=self.dtype)
        dV = np.empty((steps, n_rows, 3 * H), dtype=self.dtype)
        delta = (g_out[-1] if g_out is not None else grad_y).copy()
        for t in range(steps - 1, -1, -1):
            r, z, n, v_n = keep[0, t], keep[1, t], keep[2, t], keep[3, t]
            da_n = delta * (1.0 - z) * (1.0 - n * n)
            np.multiply(da_n * v_n, r * (1.0 - r), out=dU[t, :, :H])
            np.multiply(delta * (hs[t] - n), z * (1.0 - z), out=dU[t, :, H:2 * H])
            dU[t, :, 2 * H:] = da_n
            dV[t, :, :2 * H] = dU[t, :, :2 * H]
            np.multiply(da_n, r, out=dV[t, :, 2 * H:])
            delta = delta * z
            delta += dV[t] @ W_hh_T
            if g_out is not None and t > 0:
                delta += g_out[t - 1]
        return self._finish(xt, hs[:-1], dU, dV, [delta], need_input_grad)
