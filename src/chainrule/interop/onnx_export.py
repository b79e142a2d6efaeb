"""ONNX export: a built Sequential as an ONNX graph that computes what ``model.predict`` does.

``export_onnx(model, "m.onnx")`` writes one node (or a few) per layer, at inference:

    Dense                 Gemm (x W + b, W as it is: (D, M) is Gemm's B); MatMul + Add on (N, …, D)
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Identity    Relu, LeakyRelu, Sigmoid, Tanh,
                          Softmax(axis=-1), Identity
    GELU                  x · ½ (1 + Erf(x/√2)), or its tanh form, in Mul/Add/Erf/Tanh nodes
    Flatten               Flatten(axis=1)
    Dropout               Dropout (with its ratio; the identity at inference)
    RandomShift           Identity (augmentation only happens in training)
    Conv2D                Conv with explicit pads [top, left, bottom, right]: "same" is computed
                          for the model's input size by chainrule's own rule (the odd row at the
                          bottom, the odd column on the right), so every stride and dilation fits
    MaxPool2D, AvgPool2D  MaxPool, AveragePool(count_include_pad=1), explicit pads likewise
    GlobalAveragePool2D   GlobalAveragePool, then Flatten(axis=1)
    BatchNorm             BatchNormalization with the running statistics (frozen or not)
    LayerNorm             LayerNormalization(axis=-1)
    Embedding             Gather(W, ids) on int64 ids
    PositionalEmbedding   Add of W's first T rows (a Slice of W)
    CausalSelfAttention   MatMul/Split/Reshape/Transpose, the causal mask as an additive −∞
                          constant, Softmax, MatMul: GPT-2's attention written out
    RNN, LSTM, GRU        ONNX's RNN, LSTM and GRU (gate blocks reordered from torch's
                          i f g o to ONNX's i o f c, r z n to z r h with
                          linear_before_reset=1), batch-first by Transposes
    Residual              the block's nodes, then Add(x, block(x))

Images of shape (N, H, W) (a model built on (28, 28)) get an Unsqueeze to one channel before a
Conv, as chainrule's Conv2D reads them. Initializers are named as ``model.state_dict()``
(``dense_1.W``), nodes as the layers, so Netron shows the model as ``summary()`` does.

The graph has one input ``input`` of shape (N, *model.input_shape) and one output ``output``
(N, *model.output_shape), N a dynamic batch axis, and declares ONNX opset ``OPSET`` (17:
LayerNormalization is the newest operator used). Tensors are the model's dtype: a float64
model's graph is in double precision, which onnxruntime's CPU provider lacks kernels for (Conv,
the pools, Erf, RNN/LSTM/GRU); export ``model.copy(dtype="float32")`` for it. A layer with no
ONNX form (a layer class of your own) is refused with its name.
"""

from __future__ import annotations

import math

import numpy as np

from .. import layers as L
from ..fileio import atomic_write
from ..layers.arguments import pad_amounts
from ..version import __version__

__all__ = ["OPSET", "export_onnx", "require_onnx"]

#: The ONNX operator set the exported graphs declare.
OPSET = 17

#: Positions of torch's gate blocks in ONNX's order: LSTM i f g o → i o f c; GRU r z n → z r h.
_GATE_ORDER = {"RNN": [0], "LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}


def require_onnx(what: str):
    """The ``onnx`` module, or ImportError naming the install command."""
    try:
        import onnx
    except ImportError:
        raise ImportError(
            f"{what} needs the onnx package: pip install \"chainrule[onnx]\""
        ) from None
    return onnx


def export_onnx(model, path=None, *, opset: int = OPSET, input_name: str = "input",
                output_name: str = "output"):
    """Write ``model`` as an ONNX model that computes ``model.predict`` (inference mode).

    The result is checked with ``onnx.checker.check_model(full_check=True)`` (which also runs
    ONNX's shape inference over the graph) before it is written.

    Args:
        model: a built Sequential.
        path: where to write the ``.onnx`` file (atomically); None: only return the model.
        opset: the operator set to declare (at least ``OPSET``).
        input_name, output_name: names of the graph's input and output.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        ImportError: without the onnx package, naming the install command.
        ValueError: for an unbuilt model, an opset below ``OPSET``, or a layer that has no
            ONNX form, naming it.
    """
    onnx = require_onnx("export_onnx")
    from onnx import TensorProto, helper

    if not getattr(model, "built", False):
        raise ValueError("export_onnx: the model is not built yet (no weights); fit or build it "
                         "first")
    if opset < OPSET:
        raise ValueError(f"export_onnx: opset must be at least {OPSET} (LayerNormalization), "
                         f"got {opset}")
    float_type = {np.dtype(np.float32): TensorProto.FLOAT,
                  np.dtype(np.float64): TensorProto.DOUBLE}[model.dtype]
    graph = _Graph(model.dtype)
    x, shape = input_name, tuple(model.input_shape)
    for layer in model.layers:
        x, shape = graph.layer(layer, x, shape, "")
    graph.rename(x, output_name, input_name)
    first = model.layers[0]
    input_type = TensorProto.INT64 if first.integer_input else float_type
    proto = helper.make_graph(
        graph.nodes, model.name,
        [helper.make_tensor_value_info(input_name, input_type, ["N", *model.input_shape])],
        [helper.make_tensor_value_info(output_name, float_type, ["N", *model.output_shape])],
        initializer=graph.initializers,
    )
    result = helper.make_model(
        proto, opset_imports=[helper.make_opsetid("", opset)], producer_name="chainrule",
        producer_version=__version__,
        doc_string=f"chainrule Sequential {model.name!r}: "
                   + " → ".join(type(layer).__name__ for layer in model.layers),
    )
    # An IR version that every onnxruntime release supporting this opset reads.
    result.ir_version = min(result.ir_version, 10)
    onnx.checker.check_model(result, full_check=True)
    if path is not None:
        data = result.SerializeToString()
        atomic_write(path, lambda f: f.write(data))
    return result


class _Graph:
    """The nodes and initializers of the graph being written; tensor names are unique."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.nodes = []
        self.initializers = []
        self.names: set[str] = set()

    # ------------------------------------------------------------------ building blocks
    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, name: str, array) -> str:
        """An initializer holding ``array`` (as it is: its dtype, its bytes)."""
        from onnx import numpy_helper

        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, np.array(value, dtype=self.dtype))

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs, name: str, outputs: int = 1, **attrs):
        """Add a node named ``name`` whose output tensors are named after it."""
        from onnx import helper

        name = self.unique(name)
        names = [name] + [self.unique(f"{name}:{i}") for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names[0] if outputs == 1 else names

    def rename(self, old: str, new: str, input_name: str) -> None:
        """Call the graph's last tensor ``new`` (an Identity when the model maps x to itself)."""
        if old == input_name:
            self.op("Identity", [old], new)
            return
        for node in self.nodes:
            node.output[:] = [new if out == old else out for out in node.output]

    # ------------------------------------------------------------------ layers
    def layer(self, layer, x: str, shape: tuple, prefix: str) -> tuple[str, tuple]:
        """Nodes computing ``layer`` on tensor ``x`` (samples of ``shape``); returns the
        output tensor and its sample shape. ``prefix``: a Residual's name and a dot."""
        write = _WRITERS.get(type(layer))
        if write is None:
            raise ValueError(
                f"export_onnx: layer {prefix}{layer.name!r} ({type(layer).__name__}) has no ONNX "
                f"form; the layers that export are {', '.join(sorted(_NAMES))}"
            )
        name = prefix + layer.name
        out = write(self, layer, x, shape, name)
        return out, tuple(layer.compute_output_shape(shape))

    def param(self, name: str, layer, attr: str) -> str:
        return self.const(f"{name}.{attr}", getattr(layer, attr).value)

    def images(self, x: str, shape: tuple, name: str) -> tuple[str, bool]:
        """x as (N, C, H, W): an Unsqueeze to one channel for (N, H, W) input."""
        if len(shape) == 3:
            return x, False
        return self.op("Unsqueeze", [x, self.ints(f"{name}/axes", [1])], f"{name}/unsqueeze"), \
            True


def _pads(layer, shape, kernel, dilation=(1, 1)) -> list[int]:
    (top, bottom), (left, right) = pad_amounts(layer.padding, shape[-2:], kernel, layer.strides,
                                               dilation)
    return [top, left, bottom, right]


def _dense(g: _Graph, layer, x, shape, name):
    W = g.param(name, layer, "W")
    b = [g.param(name, layer, "b")] if layer.use_bias else []
    if len(shape) == 1:
        return g.op("Gemm", [x, W, *b], name)
    z = g.op("MatMul", [x, W], f"{name}/matmul" if b else name)
    return g.op("Add", [z, *b], name) if b else z


def _unary(op_type, **attrs):
    def write(g: _Graph, layer, x, shape, name):
        return g.op(op_type, [x], name, **attrs)
    return write


def _leaky_relu(g: _Graph, layer, x, shape, name):
    return g.op("LeakyRelu", [x], name, alpha=float(layer.alpha))


def _gelu(g: _Graph, layer, x, shape, name):
    if layer.approximate == "tanh":
        # ½ x (1 + tanh(√(2/π) (x + κ x³)))
        x3 = g.op("Mul", [g.op("Mul", [x, x], f"{name}/x2"), x], f"{name}/x3")
        inner = g.op("Add", [x, g.op("Mul", [x3, g.scalar(f"{name}/kappa", 0.044715)],
                                     f"{name}/kx3")], f"{name}/inner")
        u = g.op("Mul", [inner, g.scalar(f"{name}/sqrt_2_pi", math.sqrt(2.0 / math.pi))],
                 f"{name}/u")
        t = g.op("Tanh", [u], f"{name}/tanh")
    else:
        # Φ(x) = ½ (1 + erf(x/√2)), y = x Φ(x): the order chainrule (and torch) compute in.
        t = g.op("Erf", [g.op("Mul", [x, g.scalar(f"{name}/sqrt1_2", math.sqrt(0.5))],
                              f"{name}/scaled")], f"{name}/erf")
    one_plus = g.op("Add", [t, g.scalar(f"{name}/one", 1.0)], f"{name}/one_plus")
    if layer.approximate == "tanh":
        half_x = g.op("Mul", [x, g.scalar(f"{name}/half", 0.5)], f"{name}/half_x")
        return g.op("Mul", [half_x, one_plus], name)
    phi = g.op("Mul", [one_plus, g.scalar(f"{name}/half", 0.5)], f"{name}/phi")
    return g.op("Mul", [x, phi], name)


def _dropout(g: _Graph, layer, x, shape, name):
    return g.op("Dropout", [x, g.scalar(f"{name}/ratio", layer.rate)], name)


def _conv(g: _Graph, layer, x, shape, name):
    x4, _ = g.images(x, shape, name)
    b = [g.param(name, layer, "b")] if layer.use_bias else []
    return g.op("Conv", [x4, g.param(name, layer, "W"), *b], name,
                kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                dilations=list(layer.dilation),
                pads=_pads(layer, shape, layer.kernel_size, layer.dilation))


def _pool(op_type, **attrs):
    def write(g: _Graph, layer, x, shape, name):
        x4, added = g.images(x, shape, name)
        y = g.op(op_type, [x4], f"{name}/pool" if added else name,
                 kernel_shape=list(layer.pool_size), strides=list(layer.strides),
                 pads=_pads(layer, shape, layer.pool_size), **attrs)
        if added:
            y = g.op("Squeeze", [y, g.ints(f"{name}/squeeze_axes", [1])], name)
        return y
    return write


def _global_average(g: _Graph, layer, x, shape, name):
    return g.op("Flatten", [g.op("GlobalAveragePool", [x], f"{name}/pool")], name, axis=1)


def _batchnorm(g: _Graph, layer, x, shape, name):
    inputs = [x, g.param(name, layer, "gamma"), g.param(name, layer, "beta"),
              g.const(f"{name}.running_mean", layer.running_mean),
              g.const(f"{name}.running_var", layer.running_var)]
    # ONNX's momentum weighs the old average (as Keras's): 1 − chainrule's (PyTorch's) m.
    return g.op("BatchNormalization", inputs, name, epsilon=float(layer.eps),
                momentum=1.0 - float(layer.momentum))


def _layernorm(g: _Graph, layer, x, shape, name):
    return g.op("LayerNormalization",
                [x, g.param(name, layer, "gamma"), g.param(name, layer, "beta")], name,
                axis=-1, epsilon=float(layer.eps))


def _embedding(g: _Graph, layer, x, shape, name):
    return g.op("Gather", [g.param(name, layer, "W"), x], name, axis=0)


def _positional(g: _Graph, layer, x, shape, name):
    rows = g.op("Slice", [g.param(name, layer, "W"), g.ints(f"{name}/start", [0]),
                          g.ints(f"{name}/stop", [shape[0]]), g.ints(f"{name}/axis", [0])],
                f"{name}/rows")
    return g.op("Add", [x, rows], name)


def _attention(g: _Graph, layer, x, shape, name):
    t, e = shape
    h = layer.heads
    d = e // h
    qkv = g.op("Add", [g.op("MatMul", [x, g.param(name, layer, "W_qkv")], f"{name}/qkv_matmul"),
                       g.param(name, layer, "b_qkv")], f"{name}/qkv")
    q, k, v = g.op("Split", [qkv, g.ints(f"{name}/split", [e, e, e])], f"{name}/split",
                   outputs=3, axis=-1)
    heads = g.ints(f"{name}/heads_shape", [-1, t, h, d])
    # Q (N, H, T, d), Kᵀ (N, H, d, T), V (N, H, T, d)
    q = g.op("Transpose", [g.op("Reshape", [q, heads], f"{name}/q_heads")], f"{name}/q",
             perm=[0, 2, 1, 3])
    k_t = g.op("Transpose", [g.op("Reshape", [k, heads], f"{name}/k_heads")], f"{name}/k_t",
               perm=[0, 2, 3, 1])
    v = g.op("Transpose", [g.op("Reshape", [v, heads], f"{name}/v_heads")], f"{name}/v",
             perm=[0, 2, 1, 3])
    s = g.op("Mul", [g.op("MatMul", [q, k_t], f"{name}/qk"),
                     g.scalar(f"{name}/scale", 1.0 / math.sqrt(d))], f"{name}/scores")
    mask = np.where(np.triu(np.ones((t, t), dtype=bool), k=1), -np.inf, 0.0).astype(g.dtype)
    s = g.op("Add", [s, g.const(f"{name}/causal_mask", mask)], f"{name}/masked")
    p = g.op("Softmax", [s], f"{name}/p", axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [p, v], f"{name}/pv")], f"{name}/o_heads",
             perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints(f"{name}/merge_shape", [-1, t, e])], f"{name}/o")
    y = g.op("MatMul", [o, g.param(name, layer, "W_out")], f"{name}/out_matmul")
    return g.op("Add", [y, g.param(name, layer, "b_out")], name)


def _recurrent(g: _Graph, layer, x, shape, name):
    kind = type(layer).__name__
    units = layer.units
    order = _GATE_ORDER[kind]

    def gates(a):
        """a (…, G·H) with its gate blocks in ONNX's order."""
        return np.concatenate([a[..., i * units:(i + 1) * units] for i in order], axis=-1)

    W = g.const(f"{name}/W", gates(layer.W_ih.value).T[None])
    R = g.const(f"{name}/R", gates(layer.W_hh.value).T[None])
    B = g.const(f"{name}/B", np.concatenate([gates(layer.b_ih.value),
                                             gates(layer.b_hh.value)])[None])
    xt = g.op("Transpose", [x], f"{name}/time_major", perm=[1, 0, 2])
    inputs = [xt, W, R, B]
    if layer.learn_initial_state:
        # h₀ (H,) broadcast to ONNX's (1, N, H).
        batch = g.op("Slice", [g.op("Shape", [x], f"{name}/shape"), g.ints(f"{name}/zero", [0]),
                               g.ints(f"{name}/one", [1])], f"{name}/batch")
        target = g.op("Concat", [g.ints(f"{name}/lead", [1]), batch,
                                 g.ints(f"{name}/units", [units])], f"{name}/state_shape", axis=0)
        inputs += ["", g.op("Expand", [g.param(name, layer, "h0"), target], f"{name}/h0")]
        if kind == "LSTM":
            inputs.append(g.op("Expand", [g.param(name, layer, "c0"), target], f"{name}/c0"))
    attrs = {"hidden_size": units}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    outputs = 3 if kind == "LSTM" else 2
    y, y_h = g.op(kind, inputs, f"{name}/{kind.lower()}", outputs=outputs, **attrs)[:2]
    if layer.return_sequences:
        # Y (T, 1, N, H) → (N, T, H)
        y = g.op("Squeeze", [y, g.ints(f"{name}/dir_axis", [1])], f"{name}/sequence")
        return g.op("Transpose", [y], name, perm=[1, 0, 2])
    return g.op("Squeeze", [y_h, g.ints(f"{name}/dir_axis", [0])], name)


def _residual(g: _Graph, layer, x, shape, name):
    out, inner = x, shape
    for sub in layer.layers:
        out, inner = g.layer(sub, out, inner, f"{name}.")
    return g.op("Add", [x, out], name)


_WRITERS = {
    L.Dense: _dense,
    L.Identity: _unary("Identity"),
    L.ReLU: _unary("Relu"),
    L.LeakyReLU: _leaky_relu,
    L.Sigmoid: _unary("Sigmoid"),
    L.Tanh: _unary("Tanh"),
    L.Softmax: _unary("Softmax", axis=-1),
    L.GELU: _gelu,
    L.Flatten: _unary("Flatten", axis=1),
    L.Dropout: _dropout,
    L.RandomShift: _unary("Identity"),
    L.Conv2D: _conv,
    L.MaxPool2D: _pool("MaxPool"),
    L.AvgPool2D: _pool("AveragePool", count_include_pad=1),
    L.GlobalAveragePool2D: _global_average,
    L.BatchNorm: _batchnorm,
    L.LayerNorm: _layernorm,
    L.Embedding: _embedding,
    L.PositionalEmbedding: _positional,
    L.CausalSelfAttention: _attention,
    L.RNN: _recurrent,
    L.LSTM: _recurrent,
    L.GRU: _recurrent,
    L.Residual: _residual,
}
_NAMES = [cls.__name__ for cls in _WRITERS]
