"""Optimizers: ``optimizer.step(parameters)`` updates each value in place from its ``.grad``.

The update rules follow PyTorch's formulas exactly (PyTorch is the test oracle), and state
lives per parameter in ``optimizer.state[param]``. Every update runs in place with a scratch
buffer per parameter and never leaves the parameter's dtype. After the first step, plain and
momentum SGD, Adam, AdamW and plain or momentum RMSprop allocate nothing; Nesterov, dampening,
L2 decay in Adam/RMSprop and centered RMSprop use one or two temporaries of the parameter's
size.

Parameters packed into one :class:`chainrule.parameter.ParameterBuffer` (a Sequential packs its
own) are updated together: the same update runs once on the flat (P,) arrays of all values,
gradients and state, whose segments are each parameter's ``value``, ``grad`` and
``state[param]`` arrays. The formulas are element-wise, so the result is the same as one
parameter at a time, in a few whole-array operations per step instead of a dozen per parameter.
With numba installed, Adam (and AdamW) run their passes as one compiled loop with the same
operations in the same order (:mod:`chainrule.kernels`), bit for bit the same result.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels, schedules
from .backend import as_weights
from .parameter import Parameter
from .registry import Registry
from .validate import boolean, construct, number

#: Steps between two flushes of subnormal state values (see ``_flush_subnormals``).
FLUSH_EVERY = 64


def _flush_subnormals(state: dict) -> None:
    """Set floating state entries below the smallest normal float to exactly 0.

    A moment whose gradient stays 0 (a border pixel's weights, a dead ReLU unit) decays
    geometrically, m ← β m, through the subnormal range before it reaches 0; many x86 CPUs
    handle subnormal operands tens of times slower, which made epochs slower as training went
    on (the AMD EPYC our benchmarks ran on shows no such penalty). NumPy cannot switch on the
    CPU's flush-to-zero mode, so the optimizer does it: every ``FLUSH_EVERY`` steps, values
    under ``finfo.tiny`` (1.2e-38 in float32) become 0, at the cost of a fraction of one pass
    per step. Their effect on a parameter would be below 1e-30 of the learning rate. Integer
    entries (Adam's step count) are left alone. With numba installed the same test and
    assignment run as one compiled pass per array (``kernels.flush_subnormals``).
    """
    for value in state.values():
        if not isinstance(value, np.ndarray) or kernels.flush_subnormals(value):
            continue
        tiny = np.finfo(value.dtype).tiny
        value[np.abs(value) < tiny] = 0


class Optimizer:
    """Base class: learning rate (a float or a Schedule), weight decay and per-parameter state.

    Args:
        lr: learning rate, or a :class:`chainrule.schedules.Schedule`.
        weight_decay: L2 penalty λ added to the gradient, g ← g + λ p (AdamW decouples it).

    Attributes:
        iterations: number of steps taken; per-step schedules read it. Counts that belong to one
            parameter (Adam's bias-correction step) live in its state instead, so a parameter
            first seen later, or whose state was not saved, starts from its own first step.
        last_lr: the learning rate the last step used.
        epoch: epoch index, set by ``fit`` for per-epoch schedules.
        state: dict Parameter → dict of state: arrays of the parameter's shape and dtype, and
            exact Python ints for counters (Adam's "step").
    """

    def __init__(self, lr, weight_decay: float = 0.0):
        kind = type(self).__name__
        if not isinstance(lr, schedules.Schedule):
            lr = number(lr, "lr", kind, "> 0")
        self.lr = lr
        self.weight_decay = number(weight_decay, "weight_decay", kind, ">= 0")
        self.iterations = 0
        self.epoch = 0
        self.last_lr: float | None = None
        self.state: dict[Parameter, dict[str, np.ndarray | int]] = {}
        self._scratch: dict[Parameter, np.ndarray] = {}
        self._names: dict[Parameter, str] = {}
        self._packed: _PackedState | None = None

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        if isinstance(self.lr, schedules.Schedule):
            return self.lr(self.iterations if self.lr.per == "step" else self.epoch)
        return self.lr

    def step(self, parameters) -> None:
        """Apply one update to every Parameter in ``parameters`` from its ``.grad``.

        Raises:
            RuntimeError: if a parameter has no gradient (backward has not run).
        """
        lr = self.last_lr = self.learning_rate
        self.iterations += 1
        parameters = list(parameters)
        buffer = parameters[0].buffer if parameters else None
        if buffer is not None and buffer.holds(parameters) and buffer.gather():
            packed = self._packed
            if packed is None or packed.buffer is not buffer:
                packed = self._packed = _PackedState(buffer)
            state = packed.collect(self)
            if state is not None:
                self._update(buffer.value, buffer.grad, state, packed.scratch, lr)
                packed.spread(self, state)
                if self.iterations % FLUSH_EVERY == 0:
                    _flush_subnormals(state)
                return
        for p in parameters:
            if p.grad is None:
                raise RuntimeError(
                    f"{type(self).__name__}: parameter {p.name!r} {p.shape} has no gradient; "
                    "run backward before optimizer.step"
                )
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = self._init_state(p)
            tmp = self._scratch.get(p)
            if tmp is None:
                tmp = self._scratch[p] = np.empty_like(p.value)
            self._update(p.value, p.grad, state, tmp, lr)
            if self.iterations % FLUSH_EVERY == 0:
                _flush_subnormals(state)

    def _decayed_grad(self, value, grad, out):
        """g + λ p into ``out`` (or ``grad`` itself when λ = 0)."""
        if self.weight_decay == 0.0:
            return grad
        np.multiply(value, self.weight_decay, out=out)
        out += grad
        return out

    def _init_state(self, p: Parameter) -> dict[str, np.ndarray | int]:
        return {}

    def state_layout(self) -> dict[str, str]:
        """The entries of one parameter's state: ``{key: "array" | "count"}``, an array of the
        parameter's shape or an integer counter. ``load_state_dict`` (and ``load_model``, before
        reading a file's arrays) checks state against it."""
        return {}

    # ------------------------------------------------------------------ state by name
    def bind(self, named_parameters) -> None:
        """Name the parameters this optimizer will step: ``[(name, Parameter), …]`` as
        ``Sequential.named_parameters()`` gives (``compile`` calls it, and again when the
        model gains layers), so that ``state_dict`` can name their state."""
        self._names = {p: name for name, p in named_parameters}

    def state_dict(self) -> dict:
        """The optimizer's state by parameter name: ``{"iterations": int, "epoch": int,
        "state": {name: {key: array | int}}}`` (the arrays are the optimizer's own).

        Raises:
            RuntimeError: for state of a parameter the optimizer has no name for (not
                bound to a model's ``named_parameters``).
        """
        state = {}
        for p, entries in self.state.items():
            if p not in self._names:
                raise RuntimeError(
                    f"{type(self).__name__}.state_dict: a parameter {p.name!r} {p.shape} has "
                    "state but no name; bind the optimizer to a model (compile does)"
                )
            state[self._names[p]] = dict(entries)
        return {"iterations": self.iterations, "epoch": self.epoch, "state": state}

    def load_state_dict(self, state: dict) -> None:
        """Put back what ``state_dict`` returned, for the parameters bound by name (copies).

        Every entry is checked first: names the optimizer knows, the keys of
        ``state_layout``, arrays of the parameter's shape (cast to its dtype, finite),
        counters as integers ≥ 0. A parameter without state starts fresh at its next step.

        Raises:
            ValueError: naming the parameter and entry that does not fit.
        """
        kind = type(self).__name__
        if not isinstance(state, dict) or set(state) != {"iterations", "epoch", "state"}:
            raise ValueError(f"{kind}.load_state_dict expects {{'iterations', 'epoch', "
                             f"'state'}}, got {state!r:.80}")
        by_name = {name: p for p, name in self._names.items()}
        layout = self.state_layout()
        loaded = {}
        for name, entries in state["state"].items():
            where = f"{kind}.load_state_dict: {name}"
            if name not in by_name:
                raise ValueError(f"{where}: no such parameter; the model has "
                                 f"{sorted(by_name)[:6]}")
            p = by_name[name]
            if set(entries) != set(layout):
                raise ValueError(f"{where}: expected the entries {sorted(layout)}, got "
                                 f"{sorted(entries)}")
            own = {}
            for key, value in entries.items():
                if layout[key] == "count":
                    if not isinstance(value, int | np.integer) or isinstance(value, bool) \
                            or value < 0:
                        raise ValueError(f"{where}/{key} must be an integer >= 0, got {value!r}")
                    own[key] = int(value)
                    continue
                value = np.asarray(value)
                if value.shape != p.shape:
                    raise ValueError(f"{where}/{key} expected shape {p.shape}, got "
                                     f"{value.shape}")
                own[key] = as_weights(value, p.dtype, f"{where}/{key}")
            loaded[p] = own
        for count in ("iterations", "epoch"):
            value = state[count]
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{kind}.load_state_dict: {count} must be an integer >= 0, got "
                                 f"{value!r}")
        self.iterations, self.epoch = int(state["iterations"]), int(state["epoch"])
        self.state = loaded

    def _update(self, value, grad, state, tmp, lr) -> None:
        raise NotImplementedError

    #: The constructor arguments a subclass adds to ``get_config``, read from its attributes.
    CONFIG: tuple[str, ...] = ()

    def get_config(self) -> dict:
        """JSON-able constructor arguments: lr (a number, or a schedule's class and config),
        weight_decay, and the subclass's ``CONFIG`` attributes."""
        if isinstance(self.lr, schedules.Schedule):
            lr = {"schedule": type(self.lr).__name__, "config": self.lr.get_config()}
        else:
            lr = self.lr
        return {"lr": lr, "weight_decay": self.weight_decay,
                **{key: getattr(self, key) for key in self.CONFIG}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

        g ← g + λ p
        v ← μ v + (1 − dampening) g        (v = g on the first step)
        d = g + μ v  (nesterov)   or   d = v
        p ← p − lr · d

    Args:
        lr: learning rate (default 0.01).
        momentum: μ (0 disables the velocity buffer).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening = 0).
        dampening: damping of the new gradient in v.
        weight_decay: λ.
    """

    CONFIG = ("momentum", "nesterov", "dampening")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, dampening=0.0, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = number(momentum, "momentum", "SGD", ">= 0")
        self.nesterov = boolean(nesterov, "nesterov", "SGD")
        self.dampening = number(dampening, "dampening", "SGD")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")

    def state_layout(self):
        return {"velocity": "array"} if self.momentum else {}

    def _update(self, value, grad, state, tmp, lr):
        g = self._decayed_grad(value, grad, tmp)
        if self.momentum:
            v = state.get("velocity")
            if v is None:
                v = state["velocity"] = g.copy()
            else:
                v *= self.momentum
                if self.dampening:
                    v += g * (1.0 - self.dampening)
                else:
                    v += g
            if self.nesterov:
                if g is not tmp:
                    np.copyto(tmp, g)
                tmp += v * self.momentum
                g = tmp
            else:
                g = v
        np.multiply(g, lr, out=tmp)
        value -= tmp



class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``.

        g ← g + λ p
        m ← β₁ m + (1 − β₁) g            v ← β₂ v + (1 − β₂) g²
        p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)

    ε sits outside the bias-corrected square root, as in PyTorch. t counts the steps of this
    parameter, ``state[p]["step"]`` (as ``torch.optim.Adam``), not the optimizer's
    ``iterations``: moments that start at 0 (a parameter added later, a model loaded without
    its optimizer state) always get the t = 1 correction that makes their first step ≈ lr.

    Args:
        lr: learning rate (default 1e-3).
        beta1, beta2: moment decay rates β₁, β₂.
        eps: ε.
        weight_decay: λ, added to the gradient (L2); see AdamW for decoupled decay.
    """

    CONFIG = ("beta1", "beta2", "eps")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        kind = type(self).__name__
        self.beta1 = number(beta1, "beta1", kind, "[0, 1)")
        self.beta2 = number(beta2, "beta2", kind, "[0, 1)")
        self.eps = number(eps, "eps", kind, ">= 0")

    def _init_state(self, p):
        return {"step": 0, "m": np.zeros_like(p.value), "v": np.zeros_like(p.value)}

    def state_layout(self):
        return {"step": "count", "m": "array", "v": "array"}

    #: Whether weight decay enters as the L2 term g + λ p of ``_decayed_grad`` (AdamW instead
    #: decays the weights before the step).
    l2_in_gradient = True

    def _update(self, value, grad, state, tmp, lr):
        m, v = state["m"], state["v"]
        t = state["step"] = state["step"] + 1
        # (lr / c₁) · m / (√v / √c₂ + ε) = (lr √c₂ / c₁) · m / (√v + ε √c₂), with cₖ = 1 − βₖᵗ:
        # one division pass fewer, same value.
        sqrt_c2 = math.sqrt(1.0 - self.beta2**t)
        eps_hat = self.eps * sqrt_c2
        step_size = lr * sqrt_c2 / (1.0 - self.beta1**t)
        decay = self.weight_decay if self.l2_in_gradient else 0.0
        # The same operations in one compiled loop when numba is installed (chainrule.kernels).
        if kernels.adam(value, grad, m, v, decay, self.beta1, self.beta2, eps_hat, step_size):
            return
        g = self._decayed_grad(value, grad, tmp)
        # m ← m + (1 − β₁)(g − m) is β₁ m + (1 − β₁) g in one pass (PyTorch's lerp).
        if g is tmp:
            g = g.copy()
        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - self.beta1
        m += tmp
        v *= self.beta2
        np.square(g, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps_hat
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        value -= tmp



class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

        p ← p (1 − lr λ), then the Adam step with the plain gradient g.

    Args: as Adam; ``weight_decay`` defaults to 0.01 as in PyTorch.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)

    l2_in_gradient = False

    def _decayed_grad(self, value, grad, out):
        return grad

    def _update(self, value, grad, state, tmp, lr):
        if self.weight_decay:
            value *= 1.0 - lr * self.weight_decay
        super()._update(value, grad, state, tmp, lr)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

        g ← g + λ p
        s ← α s + (1 − α) g²
        centered: ḡ ← α ḡ + (1 − α) g,  d = √(s − ḡ²) + ε;   otherwise d = √s + ε
        momentum μ > 0: b ← μ b + g / d,  p ← p − lr b;       otherwise p ← p − lr g / d

    Args:
        lr: learning rate (default 0.01), alpha: α, eps: ε, momentum: μ, centered, weight_decay: λ.
    """

    CONFIG = ("alpha", "eps", "momentum", "centered")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                 weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.alpha = number(alpha, "alpha", "RMSprop", "[0, 1)")
        self.eps = number(eps, "eps", "RMSprop", ">= 0")
        self.momentum = number(momentum, "momentum", "RMSprop", ">= 0")
        self.centered = boolean(centered, "centered", "RMSprop")

    def _init_state(self, p):
        state = {"square_avg": np.zeros_like(p.value)}
        if self.centered:
            state["grad_avg"] = np.zeros_like(p.value)
        if self.momentum:
            state["momentum_buffer"] = np.zeros_like(p.value)
        return state

    def state_layout(self):
        layout = {"square_avg": "array"}
        if self.centered:
            layout["grad_avg"] = "array"
        if self.momentum:
            layout["momentum_buffer"] = "array"
        return layout

    def _update(self, value, grad, state, tmp, lr):
        g = self._decayed_grad(value, grad, tmp)
        if g is tmp:
            g = g.copy()
        s = state["square_avg"]
        s *= self.alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.alpha
        s += tmp
        if self.centered:
            ga = state["grad_avg"]
            ga *= self.alpha
            ga += g * (1.0 - self.alpha)
            np.multiply(ga, ga, out=tmp)
            np.subtract(s, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        if self.momentum:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp
            np.multiply(buf, lr, out=tmp)
        else:
            tmp *= lr
        value -= tmp



class _PackedState:
    """An optimizer's state for the parameters of one ParameterBuffer as flat (P,) arrays,
    whose segments are the arrays in ``optimizer.state[param]``.

    ``collect`` finds or makes those flat arrays before a step, copying in state that was
    replaced since the last one (``load_state_dict``, a parameter seen for the first time);
    ``spread`` hands entries the step created or counted (SGD's velocity, Adam's step) back to
    every parameter's state.
    """

    def __init__(self, buffer):
        self.buffer = buffer
        self.scratch = np.empty_like(buffer.value)
        self.arrays: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}

    def collect(self, optimizer: Optimizer) -> dict | None:
        """The flat state for the next step, or None when the parameters' states differ in
        their entries or counters (a parameter added to a trained model, a partial load):
        they are then updated one by one."""
        params = self.buffer.parameters
        states = optimizer.state
        if all(p not in states for p in params):
            fresh = optimizer._init_state(Parameter(self.buffer.value))
            self.arrays = {}
            for p in params:
                states[p] = {}
            self.spread(optimizer, fresh)
            return fresh
        for p in params:
            if p not in states:
                states[p] = optimizer._init_state(p)
        first = states[params[0]]
        keys = first.keys()
        flat = {}
        for key, entry in first.items():
            if not isinstance(entry, np.ndarray):
                if any(states[p].get(key) != entry for p in params):
                    return None
                flat[key] = entry
                continue
            known = self.arrays.get(key)
            if known is None:
                known = self._new_array(key, np.empty_like(self.buffer.value))
            array, views = known
            for p, view in zip(params, views, strict=True):
                own = states[p].get(key)
                if own is view:
                    continue
                if own is None or own.shape != view.shape:
                    return None
                np.copyto(view, own)
                states[p][key] = view
            flat[key] = array
        if any(states[p].keys() != keys for p in params):
            return None
        return flat

    def spread(self, optimizer: Optimizer, flat: dict) -> None:
        """Give every parameter's state its segment of each flat array and each counter."""
        params = self.buffer.parameters
        states = optimizer.state
        for key, entry in flat.items():
            if not isinstance(entry, np.ndarray):
                for p in params:
                    states.setdefault(p, {})[key] = entry
                continue
            known = self.arrays.get(key)
            if known is None or known[0] is not entry:
                known = self._new_array(key, entry)
                for p, view in zip(params, known[1], strict=True):
                    states.setdefault(p, {})[key] = view

    def _new_array(self, key: str, array: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        self.arrays[key] = (array, self.buffer.views(array))
        return self.arrays[key]


OPTIMIZER_CLASSES = Registry("optimizer", expected="known:", entries=[SGD, Adam, AdamW, RMSprop])
OPTIMIZERS = Registry("optimizer", expected="pass an Optimizer or one of",
                      entries={"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop})


def get(identifier) -> Optimizer:
    """Return an Optimizer for an instance (as is) or a name ("sgd", "adam", "adamw", "rmsprop").

    Raises:
        ValueError: for an unknown name.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    name = identifier.lower() if isinstance(identifier, str) else identifier
    return OPTIMIZERS.get(name)()


def from_config(class_name: str, config: dict) -> Optimizer:
    """Rebuild an optimizer from its class name and ``get_config()``.

    Raises:
        ValueError: for an unknown class or schedule, or a config the constructors do not
            accept.
    """
    cls = OPTIMIZER_CLASSES.get(class_name)
    if not isinstance(config, dict):
        raise ValueError(f"{class_name}: the config must be a dict of arguments, got {config!r}")
    config = dict(config)
    lr = config.get("lr")
    if isinstance(lr, dict):
        if set(lr) != {"schedule", "config"}:
            raise ValueError(
                f"{class_name}: lr must be a number or {{'schedule': name, 'config': {{…}}}}, "
                f"got {lr!r}"
            )
        config["lr"] = schedules.from_config(lr["schedule"], lr["config"])
    return construct(cls, config)
