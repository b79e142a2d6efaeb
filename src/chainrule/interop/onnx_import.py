"""ONNX import: a Sequential-shaped ONNX graph as a chainrule Sequential with equal outputs.

``import_onnx("m.onnx")`` reads a graph whose nodes form one chain from its one input to its
one output, every other node input being a weight (an initializer or a Constant), and makes one
layer per operator:

    Gemm (x Bᵀ or x B, + C)           Dense: W = B (transB=0) or Bᵀ (transB=1, torch's layout),
                                      scaled by alpha, b = beta · C
    MatMul, MatMul + Add              Dense (without / with bias)
    Relu, LeakyRelu, Sigmoid, Tanh    ReLU, LeakyReLU, Sigmoid, Tanh
    Softmax over the last axis        Softmax
    Conv (2-D, group 1)               Conv2D: symmetric pads as (ph, pw), pads (or SAME_UPPER)
                                      that are chainrule's "same" for the input size as "same"
    MaxPool, AveragePool              MaxPool2D, AvgPool2D (AveragePool with padding must count
                                      it: count_include_pad=1, as chainrule's divisor kh·kw)
    BatchNormalization (inference)    BatchNorm with the running statistics
    Flatten(axis=1), Reshape to (N, D) Flatten
    Identity, Dropout                 Identity, Dropout (the ratio kept)
    LayerNormalization (last axis)    LayerNorm
    Gather(W, ids) on the input       Embedding
    GlobalAveragePool + Flatten       GlobalAveragePool2D

An Unsqueeze to one channel in front of a Conv or pool (and the Squeeze after a pool), as
``export_onnx`` writes for (N, H, W) images, is read as chainrule's own handling of rank-3
images. Anything else (another operator, a second consumer of a tensor, a computed weight, an
attribute chainrule has no equivalent for) is refused with one ValueError naming the node and
its operator. Layer names come from the node names where they are valid and unique (so an
exported model comes back with its own names and ``state_dict`` keys), else ``dense_1``….

Round trip: ``import_onnx(export_onnx(model))`` has identical weights, buffers and outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import layers as L
from ..layers.arguments import pad_amounts
from ..model import Sequential
from .names import name_layers
from .onnx_export import require_onnx

__all__ = ["IMPORTED_OPERATORS", "import_onnx"]

IMPORTED_OPERATORS = ("Gemm", "MatMul", "Add (after MatMul)", "Relu", "LeakyRelu", "Sigmoid",
                      "Tanh", "Softmax", "Conv", "MaxPool", "AveragePool",
                      "BatchNormalization", "Flatten", "Reshape (to flatten)", "Identity",
                      "Dropout", "LayerNormalization", "Gather", "GlobalAveragePool",
                      "Unsqueeze/Squeeze (one channel)")

def import_onnx(source, name: str | None = None) -> Sequential:
    """A Sequential computing what the ONNX model ``source`` computes.

    Args:
        source: a path to an ``.onnx`` file, or an ``onnx.ModelProto``.
        name: the model's name (default: the graph's name).

    Returns:
        A built Sequential in float32 or float64 (the graph input's type; float32 for integer
        ids), not compiled.

    Raises:
        ImportError: without the onnx package, naming the install command.
        FileNotFoundError: for a path that does not exist.
        ValueError: for a file that is not a valid ONNX model, a graph that is not one chain
            from input to output, or a node chainrule cannot import (named, with its operator).
    """
    onnx = require_onnx("import_onnx")
    where = "import_onnx"
    if isinstance(source, onnx.ModelProto):
        proto = source
    else:
        path = Path(source)
        where = f"import_onnx: {path}"
        if not path.is_file():
            raise FileNotFoundError(f"import_onnx: no such file: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf's errors have no common base
            raise ValueError(f"{where} is not an ONNX model ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())})") from None
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ValueError(f"{where} is not a valid ONNX model: {first}") from None
    return _Importer(proto, where).model(name)


class _Importer:
    """One ``import_onnx`` call: the graph's weights, its chain of nodes, the layers so far."""

    def __init__(self, proto, where: str):
        from onnx import numpy_helper

        self.where = where
        graph = proto.graph
        self.graph = graph
        self.opset = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.weights[node.output[0]] = self._constant(node)
            else:
                self.nodes.append(node)
        inputs = [i for i in graph.input if i.name not in self.weights]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(
                f"{where}: the graph has {len(inputs)} inputs and {len(graph.output)} outputs; "
                "a Sequential has one of each"
            )
        self.input, self.output = inputs[0], graph.output[0].name
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.layers: list[tuple[object, dict, str]] = []

    # ------------------------------------------------------------------ reading the graph
    def _constant(self, node) -> np.ndarray:
        from onnx import helper, numpy_helper

        attrs = {a.name: a for a in node.attribute}
        if "value" not in attrs:
            raise ValueError(f"{self.where}: Constant {node.name or node.output[0]!r} is not "
                             "given as a tensor ('value'); chainrule reads only tensor constants")
        return numpy_helper.to_array(helper.get_attribute_value(attrs["value"]))

    def _input_spec(self) -> tuple[tuple[int, ...], str]:
        """(sample shape, dtype name) of the graph input; the batch axis may be dynamic."""
        from onnx import TensorProto

        kind = self.input.type.WhichOneof("value")
        tensor = self.input.type.tensor_type
        if kind != "tensor_type" or not tensor.HasField("shape"):
            raise ValueError(f"{self.where}: the input {self.input.name!r} has no tensor shape")
        dims = list(tensor.shape.dim)
        sample = []
        for i, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                raise ValueError(
                    f"{self.where}: the input {self.input.name!r} has a dynamic axis {i} "
                    f"({dim.dim_param or '?'}); chainrule models take samples of one fixed "
                    "shape (only the batch axis may vary)"
                )
            sample.append(dim.dim_value)
        types = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64",
                 TensorProto.INT64: "ids", TensorProto.INT32: "ids"}
        if tensor.elem_type not in types or not dims:
            raise ValueError(f"{self.where}: the input {self.input.name!r} must be a float, "
                             "double or integer tensor (N, …)")
        return tuple(sample), types[tensor.elem_type]

    def next_node(self, tensor: str, current=None):
        """The one node that reads ``tensor`` (None at the graph output)."""
        readers = self.consumers.get(tensor, [])
        if tensor == self.output:
            if readers:
                raise ValueError(f"{self.where}: the output {tensor!r} is also read by node "
                                 f"{_label(readers[0])}; a Sequential's output is its end")
            return None
        if len(readers) != 1:
            after = f"node {_label(current)}" if current is not None else "the input"
            what = "no node" if not readers else \
                f"{len(readers)} nodes ({', '.join(_label(n) for n in readers)})"
            raise ValueError(
                f"{self.where}: the output of {after} feeds {what}; chainrule imports graphs "
                "that are one chain of layers"
            )
        return readers[0]

    def weight(self, node, index: int, what: str) -> np.ndarray | None:
        """The node's ``index``-th input as a weight array (None when it is absent)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.weights:
            raise ValueError(f"{self.where}: node {_label(node)}: its {what} {name!r} is computed "
                             "by the graph, not stored; chainrule imports stored weights only")
        return self.weights[name]

    # ------------------------------------------------------------------ the whole model
    def model(self, name: str | None) -> Sequential:
        shape, kind = self._input_spec()
        state = _State(self, shape, integer=kind == "ids")
        node = self.next_node(self.input.name)
        while node is not None:
            node, _ = state.read(node)
        if state.virtual:
            raise ValueError(f"{self.where}: the graph ends with an Unsqueeze'd channel axis "
                             "that chainrule cannot keep")
        if not self.layers:
            self.layers.append((L.Identity(), {}, ""))
        layers = name_layers([layer for layer, _, _ in self.layers],
                        [hint for _, _, hint in self.layers])
        # An embedding's table gives the dtype of a model that reads ids.
        dtype = (state.dtype or "float32") if kind == "ids" else kind
        model = Sequential(layers, dtype=dtype, name=name or self.graph.name or "imported")
        model.build(shape)
        weights = {f"{layer.name}.{key}": value
                   for layer, (_, arrays, _) in zip(layers, self.layers, strict=True)
                   for key, value in arrays.items()}
        try:
            model.load_state_dict(weights, strict=False)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: {exc}") from None
        return model


class _State:
    """The walk along the chain: chainrule's sample shape so far, and whether an Unsqueeze
    has added a one-channel axis (``virtual``) that chainrule's layers imply."""

    def __init__(self, importer: _Importer, shape: tuple, integer: bool):
        self.importer = importer
        self.where = importer.where
        self.shape = shape
        self.virtual = False
        self.integer = integer
        self.dtype = None

    def add(self, layer, arrays: dict, node) -> None:
        hint = (node.name or "").split("/")[0]
        self.importer.layers.append((layer, arrays, hint))
        try:
            layer.check_sample_shape(self.shape)
        except ValueError as exc:
            raise ValueError(f"{self.where}: node {_label(node)}: {exc}") from None
        self.shape = tuple(layer.compute_output_shape(self.shape))

    def refuse(self, node, why: str):
        raise ValueError(f"{self.where}: node {_label(node)} ({node.op_type}): {why}")

    @property
    def onnx_shape(self) -> tuple:
        return (1, *self.shape) if self.virtual else self.shape

    def read(self, node):
        """Turn ``node`` (and the nodes it pairs with) into layers; return the next node and
        the tensor it reads."""
        if node.domain not in ("", "ai.onnx"):
            self.refuse(node, f"operator domain {node.domain!r} is not ONNX's own")
        if self.integer and node.op_type != "Gather":
            self.refuse(node, "the graph input holds integer ids, which only an embedding "
                        "(Gather on axis 0) reads")
        read = getattr(self, f"op_{node.op_type}", None)
        if read is None:
            self.refuse(node, "chainrule does not import this operator; it imports "
                        f"{', '.join(IMPORTED_OPERATORS)}")
        used = [out for out in node.output[1:] if out and self.importer.consumers.get(out)]
        if used or (len(node.output) > 1 and self.importer.output in node.output[1:]):
            self.refuse(node, "only its first output may be used")
        last = read(node, _attributes(node)) or node
        out = last.output[0]
        return self.importer.next_node(out, last), out

    def follower(self, node, op_types):
        """The node after ``node`` when it is one of ``op_types`` (else None)."""
        out = node.output[0]
        if out == self.importer.output:
            return None
        readers = self.importer.consumers.get(out, [])
        if len(readers) == 1 and readers[0].op_type in op_types:
            return readers[0]
        return None

    # ------------------------------------------------------------------ dense
    def op_Gemm(self, node, attrs):
        if attrs.get("transA", 0):
            self.refuse(node, "transA=1 transposes the input; chainrule's Dense reads (N, D)")
        if len(self.onnx_shape) != 1:
            self.refuse(node, f"Gemm needs (N, D) input, the samples here are {self.shape}")
        B = self.importer.weight(node, 1, "B")
        if B is None or B.ndim != 2:
            self.refuse(node, "B must be a stored 2-D weight")
        W = (B.T if attrs.get("transB", 0) else B) * float(attrs.get("alpha", 1.0))
        C = self.importer.weight(node, 2, "C")
        arrays = {"W": np.ascontiguousarray(W)}
        if C is not None:
            arrays["b"] = self._bias(node, C, W.shape[1]) * float(attrs.get("beta", 1.0))
        self.add(L.Dense(W.shape[1], use_bias=C is not None), arrays, node)

    def _bias(self, node, b: np.ndarray, units: int) -> np.ndarray:
        if b.size == 1:
            return np.full(units, b.reshape(()), dtype=b.dtype)
        if b.shape not in ((units,), (1, units)):
            self.refuse(node, f"a bias of shape {b.shape} is not one value per output "
                        f"({units},)")
        return b.reshape(units)

    def op_MatMul(self, node, attrs):
        W = self.importer.weight(node, 1, "weight")
        if W is None or W.ndim != 2:
            self.refuse(node, "the second input must be a stored 2-D weight (x W)")
        arrays = {"W": W}
        add = self.follower(node, ("Add",))
        if add is not None:
            other = [i for i in add.input if i != node.output[0]]
            if len(other) == 1 and other[0] in self.importer.weights:
                arrays["b"] = self._bias(add, self.importer.weights[other[0]], W.shape[1])
            else:
                add = None
        self.add(L.Dense(W.shape[1], use_bias=add is not None), arrays, add or node)
        return add

    # ------------------------------------------------------------------ element-wise
    def op_Relu(self, node, attrs):
        self.add(L.ReLU(), {}, node)

    def op_LeakyRelu(self, node, attrs):
        self.add(L.LeakyReLU(_round(attrs.get("alpha", 0.01))), {}, node)

    def op_Sigmoid(self, node, attrs):
        self.add(L.Sigmoid(), {}, node)

    def op_Tanh(self, node, attrs):
        self.add(L.Tanh(), {}, node)

    def op_Identity(self, node, attrs):
        self.add(L.Identity(), {}, node)

    def op_Softmax(self, node, attrs):
        rank = len(self.onnx_shape) + 1
        axis = attrs.get("axis", -1 if self.importer.opset >= 13 else 1)
        if axis % rank != rank - 1:
            self.refuse(node, f"softmax over axis {axis} of a rank-{rank} tensor; chainrule's "
                        "Softmax is over the last axis")
        self.add(L.Softmax(), {}, node)

    def op_Dropout(self, node, attrs):
        ratio = self.importer.weight(node, 1, "ratio") if self.importer.opset >= 12 else None
        rate = float(ratio) if ratio is not None else attrs.get("ratio", 0.5)
        if len(node.input) > 2 and node.input[2]:
            mode = self.importer.weight(node, 2, "training_mode")
            if bool(mode):
                self.refuse(node, "training_mode=True drops at inference")
        self.add(L.Dropout(_round(rate)), {}, node)

    # ------------------------------------------------------------------ images
    def _padding(self, node, attrs, kernel, strides, dilation):
        """chainrule's padding argument for the node's pads (or auto_pad)."""
        size = self.onnx_shape[-2:]
        same = pad_amounts("same", size, kernel, strides, dilation)
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "VALID":
            return "valid"
        if auto == "SAME_UPPER":
            return "same"
        if auto == "SAME_LOWER":
            (top, bottom), (left, right) = same
            if top == bottom and left == right:
                return (top, left) if top or left else "valid"
            self.refuse(node, "auto_pad=SAME_LOWER puts the odd padding row on top; chainrule's "
                        "'same' puts it at the bottom (SAME_UPPER)")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            self.refuse(node, f"pads {pads} are not the 4 of a 2-D window")
        top, left, bottom, right = pads
        if top == bottom and left == right:
            return "valid" if not (top or left) else (top, left)
        if ((top, bottom), (left, right)) == same:
            return "same"
        self.refuse(node, f"pads {pads} (top, left, bottom, right) are neither symmetric nor "
                    f"chainrule's 'same' for a {size[0]}×{size[1]} input ({same})")

    def _image_input(self, node) -> None:
        if len(self.onnx_shape) != 3:
            self.refuse(node, f"a 2-D window needs (N, C, H, W) input, the samples here are "
                        f"{self.onnx_shape}")

    def op_Conv(self, node, attrs):
        self._image_input(node)
        W = self.importer.weight(node, 1, "W")
        if W is None or W.ndim != 4:
            self.refuse(node, "W must be a stored 4-D weight (F, C, kh, kw)")
        if attrs.get("group", 1) != 1:
            self.refuse(node, f"group={attrs['group']}: chainrule's Conv2D has no grouped "
                        "convolution")
        kernel = tuple(attrs.get("kernel_shape", W.shape[2:]))
        strides = tuple(attrs.get("strides", (1, 1)))
        dilation = tuple(attrs.get("dilations", (1, 1)))
        padding = self._padding(node, attrs, kernel, strides, dilation)
        b = self.importer.weight(node, 2, "B")
        arrays = {"W": W} if b is None else {"W": W, "b": b}
        self.virtual = False
        self.add(L.Conv2D(W.shape[0], kernel, strides=strides, padding=padding,
                          dilation=dilation, use_bias=b is not None), arrays, node)

    def _pool(self, node, attrs, cls):
        self._image_input(node)
        if attrs.get("ceil_mode", 0):
            self.refuse(node, "ceil_mode=1 rounds the output size up; chainrule rounds down")
        if any(d != 1 for d in attrs.get("dilations", (1, 1))):
            self.refuse(node, "dilated pooling has no chainrule equivalent")
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides", (1, 1)))
        padding = self._padding(node, attrs, kernel, strides, (1, 1))
        if cls is L.AvgPool2D and padding != "valid" and not attrs.get("count_include_pad", 0):
            self.refuse(node, "count_include_pad=0 averages over the real pixels only; "
                        "chainrule's AvgPool2D counts the padding (count_include_pad=1)")
        try:
            layer = cls(kernel, strides=strides, padding=padding)
        except ValueError as exc:
            self.refuse(node, str(exc))
        self.add(layer, {}, node)
        squeeze = self.follower(node, ("Squeeze",)) if self.virtual else None
        if squeeze is not None and self._axes(squeeze, "axes") == [1]:
            self.virtual = False
            return squeeze
        return None

    def op_MaxPool(self, node, attrs):
        if attrs.get("storage_order", 0):
            self.refuse(node, "storage_order=1 is about the indices output, which chainrule "
                        "does not give")
        return self._pool(node, attrs, L.MaxPool2D)

    def op_AveragePool(self, node, attrs):
        return self._pool(node, attrs, L.AvgPool2D)

    def op_GlobalAveragePool(self, node, attrs):
        self._image_input(node)
        flatten = self.follower(node, ("Flatten", "Reshape"))
        if flatten is None or not self._flattens(flatten, _attributes(flatten), (
                self.onnx_shape[0], 1, 1)):
            self.refuse(node, "GlobalAveragePool keeps (N, C, 1, 1); chainrule's "
                        "GlobalAveragePool2D gives (N, C) and needs a Flatten right after")
        self.add(L.GlobalAveragePool2D(), {}, flatten)
        return flatten

    def _axes(self, node, what: str) -> list[int]:
        if self.importer.opset >= 13 and len(node.input) > 1:
            axes = self.importer.weight(node, 1, what)
            return [] if axes is None else [int(a) for a in np.ravel(axes)]
        return list(_attributes(node).get("axes", []))

    def op_Unsqueeze(self, node, attrs):
        nxt = self.follower(node, ("Conv", "MaxPool", "AveragePool"))
        if self._axes(node, "axes") != [1] or len(self.onnx_shape) != 2 or nxt is None:
            self.refuse(node, "chainrule imports an Unsqueeze only as the one channel axis of "
                        "(N, H, W) images, right before a Conv or a pool")
        self.virtual = True

    def op_BatchNormalization(self, node, attrs):
        if attrs.get("training_mode", 0):
            self.refuse(node, "training_mode=1 normalizes by batch statistics at inference")
        if len(self.onnx_shape) not in (1, 3):
            self.refuse(node, f"chainrule's BatchNorm takes (N, C) or (N, C, H, W), the samples "
                        f"here are {self.onnx_shape}")
        names = ("scale", "B", "input_mean", "input_var")
        gamma, beta, mean, var = (self.importer.weight(node, i + 1, n)
                                  for i, n in enumerate(names))
        if any(a is None for a in (gamma, beta, mean, var)):
            self.refuse(node, "scale, B, mean and var must all be stored weights")
        momentum = _round(1.0 - attrs.get("momentum", 0.9))
        layer = L.BatchNorm(momentum=momentum, eps=_round(attrs.get("epsilon", 1e-5)))
        self.add(layer, {"gamma": gamma, "beta": beta, "running_mean": mean,
                         "running_var": var}, node)

    def op_LayerNormalization(self, node, attrs):
        rank = len(self.onnx_shape) + 1
        if attrs.get("axis", -1) % rank != rank - 1:
            self.refuse(node, "normalization over more than the last axis; chainrule's "
                        "LayerNorm normalizes the last axis")
        gamma, beta = self.importer.weight(node, 1, "Scale"), self.importer.weight(node, 2, "B")
        if gamma is None:
            self.refuse(node, "Scale must be a stored weight")
        beta = np.zeros_like(gamma) if beta is None else beta
        self.add(L.LayerNorm(eps=_round(attrs.get("epsilon", 1e-5))),
                 {"gamma": gamma, "beta": beta}, node)

    def op_Gather(self, node, attrs):
        W = self.importer.weight(node, 0, "data")
        if not self.integer or node.input[1] != self.importer.input.name:
            self.refuse(node, "chainrule imports a Gather only as an embedding of the graph's "
                        "integer input")
        if W is None or W.ndim != 2 or attrs.get("axis", 0) != 0:
            self.refuse(node, "an embedding gathers rows (axis 0) of a stored 2-D table")
        self.integer = False
        self.dtype = _float_name(W.dtype)
        self.add(L.Embedding(W.shape[0], W.shape[1]), {"W": W}, node)

    # ------------------------------------------------------------------ reshapes
    def _flattens(self, node, attrs, shape) -> bool:
        if node.op_type == "Flatten":
            return attrs.get("axis", 1) == 1
        target = self.importer.weight(node, 1, "shape")
        if target is None or attrs.get("allowzero", 0):
            return False
        target = [int(t) for t in np.ravel(target)]
        size = int(np.prod(shape))
        return len(target) == 2 and target[0] in (0, -1) and target[1] in (-1, size) and \
            target != [-1, -1]

    def op_Flatten(self, node, attrs):
        if not self._flattens(node, attrs, self.onnx_shape):
            self.refuse(node, f"Flatten(axis={attrs.get('axis')}) keeps more than the batch "
                        "axis; chainrule's Flatten gives (N, D)")
        self.virtual = False
        self.add(L.Flatten(), {}, node)

    def op_Reshape(self, node, attrs):
        if not self._flattens(node, attrs, self.onnx_shape):
            target = self.importer.weight(node, 1, "shape")
            self.refuse(node, f"a reshape to {None if target is None else target.tolist()} is "
                        "not a flatten to (N, D), the only reshape chainrule imports")
        self.virtual = False
        self.add(L.Flatten(), {}, node)


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _label(node) -> str:
    return repr(node.name or node.output[0])


def _float_name(dtype) -> str:
    return "float64" if np.dtype(dtype) == np.float64 else "float32"


def _round(value: float) -> float:
    """A float32 attribute (ONNX stores them so) as the decimal it was written from: 0.1, not
    0.10000000149."""
    return float(f"{float(value):.7g}")
