"""PyTorch both ways: ``to_torch(model)`` → ``torch.nn.Sequential``, ``from_torch(module)`` →
``Sequential``, with the weights converted to each framework's layout.

Layouts (chainrule ↔ torch):

    Dense W (D, M), b (M,)              Linear.weight (M, D) = Wᵀ, Linear.bias = b
    Conv2D W (F, C, kh, kw), b (F,)     Conv2d.weight = W, Conv2d.bias = b   (both NCHW)
    BatchNorm γ, β, running_mean/var    BatchNorm1d/2d weight, bias, running_mean/var;
                                        momentum is the same number (the new batch's weight)
    Embedding W (V, E)                  Embedding.weight = W
    LayerNorm γ, β                      LayerNorm.weight, .bias

The layers map one to one (ReLU, LeakyReLU, Sigmoid, Tanh, Softmax(dim=-1), GELU, Identity,
Flatten, Dropout, MaxPool2d, AvgPool2d(count_include_pad=True)); a few need two or three torch
modules, kept together in an inner ``nn.Sequential`` under the layer's name:

- "same" padding that is not symmetric (an even kernel, or a stride): ``nn.ZeroPad2d`` with
  chainrule's amounts for the layer's input size (``nn.ConstantPad2d(−inf)`` before a max
  pool), then the window with no padding of its own;
- (N, H, W) images: ``nn.Unflatten(1, (1, H))`` before a Conv2d or a pool (torch would read a
  3-D tensor as one unbatched image), and ``nn.Flatten(1, 2)`` after a pool to drop the channel;
- GlobalAveragePool2D: ``nn.AdaptiveAvgPool2d(1)``, ``nn.Flatten()``;
- RandomShift: ``nn.Identity()`` (it only shifts training images; torch has no such layer).

``to_torch`` names the modules after the layers (``dense_1.weight``) and returns the module in
eval mode, where it computes ``model.predict``; in train mode it computes chainrule's training
forward, batch statistics included (a frozen BatchNorm becomes an ordinary one: torch has no
frozen mode, keep it in eval mode). The sequence layers (RNN, LSTM, GRU, attention, positional
embeddings, Residual) have no ``nn.Sequential`` form and are refused with their name.

``from_torch`` reads an ``nn.Sequential`` (nested ones are flattened) of those modules, including
what ``to_torch`` writes. torch is imported only inside these functions.
"""

from __future__ import annotations

import math

import numpy as np

from .. import layers as L
from ..layers.arguments import pad_amounts
from ..model import Sequential
from .names import name_layers

__all__ = ["from_torch", "to_torch"]


def require_torch(what: str):
    """The ``torch`` module, or ImportError naming the install command."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{what} needs PyTorch: pip install \"chainrule[torch]\" (or the build for your "
            "machine from https://pytorch.org)"
        ) from None
    return torch


# ---------------------------------------------------------------------- chainrule → torch
def to_torch(model):
    """An ``nn.Sequential`` that computes what ``model`` computes, with a copy of its weights.

    Args:
        model: a built Sequential.

    Returns:
        ``torch.nn.Sequential`` in eval mode, its parameters in the model's dtype, one child per
        layer named as the layer.

    Raises:
        ImportError: without torch, naming the install command.
        ValueError: for an unbuilt model or a layer with no ``nn.Sequential`` form, naming it.
    """
    torch = require_torch("to_torch")
    from collections import OrderedDict

    if not getattr(model, "built", False):
        raise ValueError("to_torch: the model is not built yet (no weights); fit or build it "
                         "first")
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        model.dtype]
    children = OrderedDict()
    for layer in model.layers:
        convert = _TO_TORCH.get(type(layer))
        if convert is None:
            raise ValueError(
                f"to_torch: layer {layer.name!r} ({type(layer).__name__}) has no torch.nn."
                f"Sequential form; the layers that convert are "
                f"{', '.join(cls.__name__ for cls in _TO_TORCH)}"
            )
        modules = convert(torch.nn, layer, tuple(layer.input_shape))
        children[layer.name] = modules[0] if len(modules) == 1 else torch.nn.Sequential(*modules)
    module = torch.nn.Sequential(children).to(dtype)
    with torch.no_grad():
        for layer in model.layers:
            _copy_weights(torch, children[layer.name], layer)
    return module.eval()


def _copy_weights(torch, module, layer) -> None:
    """Copy ``layer``'s weights into the torch module (or the one inside its nn.Sequential)."""
    if isinstance(module, torch.nn.Sequential):
        weighted = [m for m in module if any(True for _ in m.parameters())]
        if not weighted:
            return
        module = weighted[0]

    def put(target, array):
        target.copy_(torch.from_numpy(np.ascontiguousarray(array)))

    if isinstance(layer, L.Dense):
        put(module.weight, layer.W.value.T)
    elif isinstance(layer, L.Conv2D | L.Embedding):
        put(module.weight, layer.W.value)
    elif isinstance(layer, L.BatchNorm | L.LayerNorm):
        put(module.weight, layer.gamma.value)
        put(module.bias, layer.beta.value)
        if isinstance(layer, L.BatchNorm):
            put(module.running_mean, layer.running_mean)
            put(module.running_var, layer.running_var)
        return
    if getattr(layer, "use_bias", False):
        put(module.bias, layer.b.value)


def _images(nn, shape, layer_modules, pool: bool):
    """Wrap window modules for (N, H, W) input: Unflatten to one channel (and back, for pools)."""
    if len(shape) == 3:
        return layer_modules
    wrapped = [nn.Unflatten(1, (1, shape[0])), *layer_modules]
    return wrapped + [nn.Flatten(1, 2)] if pool else wrapped


def _window_padding(layer, shape, kernel, dilation=(1, 1)):
    """(torch padding argument, explicit pad (left, right, top, bottom) or None)."""
    (top, bottom), (left, right) = pad_amounts(layer.padding, shape[-2:], kernel, layer.strides,
                                               dilation)
    if top == bottom and left == right:
        return (top, left), None
    return (0, 0), (left, right, top, bottom)


def _dense(nn, layer, shape):
    return [nn.Linear(shape[-1], layer.units, bias=layer.use_bias)]


def _conv(nn, layer, shape):
    channels = 1 if len(shape) == 2 else shape[0]
    padding, explicit = _window_padding(layer, shape, layer.kernel_size, layer.dilation)
    conv = nn.Conv2d(channels, layer.filters, layer.kernel_size, stride=layer.strides,
                     padding=padding, dilation=layer.dilation, bias=layer.use_bias)
    modules = [conv] if explicit is None else [nn.ZeroPad2d(explicit), conv]
    return _images(nn, shape, modules, pool=False)


def _pool(nn, layer, shape):
    padding, explicit = _window_padding(layer, shape, layer.pool_size)
    if isinstance(layer, L.MaxPool2D):
        pool = nn.MaxPool2d(layer.pool_size, layer.strides, padding=padding)
        pad = None if explicit is None else nn.ConstantPad2d(explicit, -math.inf)
    else:
        pool = nn.AvgPool2d(layer.pool_size, layer.strides, padding=padding,
                            count_include_pad=True)
        pad = None if explicit is None else nn.ZeroPad2d(explicit)
    return _images(nn, shape, [pool] if pad is None else [pad, pool], pool=True)


def _batchnorm(nn, layer, shape):
    cls = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
    return [cls(shape[0], eps=layer.eps, momentum=layer.momentum)]


_TO_TORCH = {
    L.Dense: _dense,
    L.Identity: lambda nn, layer, shape: [nn.Identity()],
    L.ReLU: lambda nn, layer, shape: [nn.ReLU()],
    L.LeakyReLU: lambda nn, layer, shape: [nn.LeakyReLU(layer.alpha)],
    L.Sigmoid: lambda nn, layer, shape: [nn.Sigmoid()],
    L.Tanh: lambda nn, layer, shape: [nn.Tanh()],
    L.Softmax: lambda nn, layer, shape: [nn.Softmax(dim=-1)],
    L.GELU: lambda nn, layer, shape: [nn.GELU(approximate=layer.approximate)],
    L.Flatten: lambda nn, layer, shape: [nn.Flatten()],
    L.Dropout: lambda nn, layer, shape: [nn.Dropout(layer.rate)],
    L.RandomShift: lambda nn, layer, shape: [nn.Identity()],
    L.Conv2D: _conv,
    L.MaxPool2D: _pool,
    L.AvgPool2D: _pool,
    L.GlobalAveragePool2D: lambda nn, layer, shape: [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
    L.BatchNorm: _batchnorm,
    L.Embedding: lambda nn, layer, shape: [nn.Embedding(layer.input_dim, layer.output_dim)],
    L.LayerNorm: lambda nn, layer, shape: [nn.LayerNorm(shape[-1], eps=layer.eps)],
}


# ---------------------------------------------------------------------- torch → chainrule
_FROM_TORCH_NAMES = ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
                     "AdaptiveAvgPool2d(1) + Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
                     "Softmax", "GELU", "Identity", "Flatten", "Dropout", "Embedding",
                     "LayerNorm", "ZeroPad2d/ConstantPad2d before a window",
                     "Unflatten(1, (1, H)) before a window")


def from_torch(module, input_shape=None, dtype=None, name: str = "from_torch") -> Sequential:
    """A Sequential computing what ``module`` computes in eval mode, with a copy of its weights.

    Args:
        module: an ``nn.Sequential`` (nested ones are flattened) of the modules listed in the
            module docstring, or one such module.
        input_shape: one sample's shape; needed unless the first module is a Linear (whose
            in_features it is).
        dtype: the model's dtype, "float32" or "float64"; default: the module's tensors'
            (float32 for a module without any).
        name: the model's name.

    Returns:
        A built Sequential (float32 or float64, as the module's parameters), not compiled; layer
        names from the module's child names where they are identifiers.

    Raises:
        ImportError: without torch, naming the install command.
        ValueError: for a module with no chainrule equivalent or a setting chainrule does not
            have (naming the module), or an input shape that cannot be inferred.
    """
    torch = require_torch("from_torch")
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    flat = list(_flatten(nn, module, ""))
    if not flat:
        raise ValueError("from_torch: the module holds no layers")
    dtypes = {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers()
                                                       if b.is_floating_point()}
    if not dtypes <= {torch.float32, torch.float64} or len(dtypes) > 1:
        raise ValueError(f"from_torch: the module's tensors must all be float32 or all "
                         f"float64, got {sorted(str(d) for d in dtypes)}")
    if dtype is None:
        dtype = "float64" if dtypes == {torch.float64} else "float32"
    if input_shape is None:
        first = flat[0][1]
        if not isinstance(first, nn.Linear):
            raise ValueError(
                f"from_torch: cannot infer the input shape from {type(first).__name__} "
                f"{flat[0][0]!r} (it takes inputs of any size); pass input_shape=, e.g. "
                "(1, 28, 28) for MNIST images"
            )
        input_shape = (first.in_features,)
    reader = _Reader(torch, tuple(int(d) for d in np.atleast_1d(input_shape)))
    i = 0
    while i < len(flat):
        i = reader.read(flat, i)
    if reader.virtual:
        raise ValueError("from_torch: the module ends with the channel axis an Unflatten added; "
                         "chainrule cannot keep it")
    layers = name_layers([layer for layer, _, _ in reader.layers],
                         [hint for _, _, hint in reader.layers])
    model = Sequential(layers, dtype=dtype, name=name)
    model.build(reader.input_shape)
    weights = {f"{layer.name}.{key}": value
               for layer, (_, arrays, _) in zip(layers, reader.layers, strict=True)
               for key, value in arrays.items()}
    model.load_state_dict(weights, strict=False)
    return model


def _flatten(nn, module, prefix: str):
    """(name, module) for every leaf of nested nn.Sequentials, named by the top-level child."""
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            yield from _flatten(nn, child, prefix or child_name)
    else:
        yield prefix, module


def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


class _Reader:
    """The walk over the flattened modules: chainrule's sample shape, a pending pad, and whether
    an Unflatten added a one-channel axis (``virtual``) that chainrule's layers imply."""

    def __init__(self, torch, input_shape):
        self.torch = torch
        self.nn = torch.nn
        self.input_shape = input_shape
        self.shape = input_shape
        self.virtual = False
        self.layers: list[tuple[object, dict, str]] = []

    def refuse(self, name, module, why: str):
        raise ValueError(f"from_torch: module {name!r} ({type(module).__name__}): {why}")

    def add(self, layer, arrays, name, module) -> None:
        try:
            layer.check_sample_shape(self.shape)
        except ValueError as exc:
            self.refuse(name, module, str(exc))
        self.layers.append((layer, arrays, name))
        self.shape = tuple(layer.compute_output_shape(self.shape))

    @property
    def torch_shape(self):
        return (1, *self.shape) if self.virtual else self.shape

    def read(self, flat, i: int) -> int:
        """Turn module i (and those it pairs with) into a layer; return the next index."""
        nn = self.nn
        name, module = flat[i]
        nxt = flat[i + 1][1] if i + 1 < len(flat) else None
        simple = {nn.ReLU: L.ReLU, nn.Sigmoid: L.Sigmoid, nn.Tanh: L.Tanh,
                  nn.Identity: L.Identity}
        if type(module) in simple:
            self.add(simple[type(module)](), {}, name, module)
        elif isinstance(module, nn.LeakyReLU):
            self.add(L.LeakyReLU(module.negative_slope), {}, name, module)
        elif isinstance(module, nn.GELU):
            self.add(L.GELU(approximate=module.approximate), {}, name, module)
        elif isinstance(module, nn.Softmax):
            rank = len(self.torch_shape) + 1
            dim = module.dim if module.dim is not None else (0 if rank in (0, 1, 3) else 1)
            if dim % rank != rank - 1:
                self.refuse(name, module, f"softmax over dim {module.dim} of a rank-{rank} "
                            "tensor; chainrule's Softmax is over the last axis")
            self.add(L.Softmax(), {}, name, module)
        elif type(module) is nn.Dropout:
            self.add(L.Dropout(float(module.p)), {}, name, module)
        elif isinstance(module, nn.Linear):
            arrays = {"W": _array(module.weight).T.copy()}
            if module.bias is not None:
                arrays["b"] = _array(module.bias)
            self.add(L.Dense(module.out_features, use_bias=module.bias is not None), arrays,
                     name, module)
        elif isinstance(module, nn.Flatten):
            return self._flatten_module(name, module, i)
        elif isinstance(module, nn.Unflatten):
            if (module.dim != 1 or tuple(module.unflattened_size) != (1, self.shape[0])
                    or len(self.shape) != 2
                    or not isinstance(nxt, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d
                                      | nn.ZeroPad2d | nn.ConstantPad2d)):
                self.refuse(name, module, "chainrule reads an Unflatten only as the one "
                            "channel of (N, H, W) images, right before a Conv2d or a pool")
            self.virtual = True
        elif isinstance(module, nn.ZeroPad2d | nn.ConstantPad2d):
            return self._padded(flat, i)
        elif isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            self._window(name, module, None)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            size = module.output_size
            if size not in (1, (1, 1)) or not isinstance(nxt, nn.Flatten) or len(
                    self.torch_shape) != 3:
                self.refuse(name, module, "chainrule's GlobalAveragePool2D is "
                            "AdaptiveAvgPool2d(1) followed by Flatten, on (N, C, H, W)")
            self.add(L.GlobalAveragePool2D(), {}, name, module)
            return i + 2
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            self._batchnorm(name, module)
        elif isinstance(module, nn.Embedding):
            if module.padding_idx is not None or module.max_norm is not None or \
                    module.scale_grad_by_freq or module.sparse:
                self.refuse(name, module, "padding_idx, max_norm, scale_grad_by_freq and sparse "
                            "have no chainrule equivalent")
            self.add(L.Embedding(module.num_embeddings, module.embedding_dim),
                     {"W": _array(module.weight)}, name, module)
        elif isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1 or not module.elementwise_affine:
                self.refuse(name, module, "chainrule's LayerNorm normalizes the last axis, with "
                            "γ and β")
            gamma = _array(module.weight)
            beta = np.zeros_like(gamma) if module.bias is None else _array(module.bias)
            self.add(L.LayerNorm(eps=module.eps), {"gamma": gamma, "beta": beta}, name, module)
        else:
            self.refuse(name, module, "no chainrule equivalent; chainrule converts "
                        f"{', '.join(_FROM_TORCH_NAMES)}")
        return i + 1

    def _flatten_module(self, name, module, i: int) -> int:
        rank = len(self.torch_shape) + 1
        end = module.end_dim % rank
        if module.start_dim == 1 and end == rank - 1:
            self.virtual = False
            self.add(L.Flatten(), {}, name, module)
        elif self.virtual and module.start_dim == 1 and end == 2:
            self.virtual = False  # the channel an Unflatten added, dropped again
        else:
            self.refuse(name, module, f"Flatten({module.start_dim}, {module.end_dim}) keeps more "
                        "than the batch axis; chainrule's Flatten gives (N, D)")
        return i + 1

    def _padded(self, flat, i: int) -> int:
        name, pad = flat[i]
        window = flat[i + 1][1] if i + 1 < len(flat) else None
        value = float(getattr(pad, "value", 0.0))
        windows = (self.nn.Conv2d, self.nn.MaxPool2d, self.nn.AvgPool2d)
        fits = isinstance(window, windows) and (
            value == 0.0 if not isinstance(window, self.nn.MaxPool2d) else value == -math.inf)
        if not fits:
            self.refuse(name, pad, "chainrule reads a pad only right before a window: zeros "
                        "before a Conv2d or AvgPool2d, −inf before a MaxPool2d")
        left, right, top, bottom = pad.padding
        self._window(flat[i + 1][0], window, ((top, bottom), (left, right)))
        return i + 2

    def _window(self, name, module, pads) -> None:
        """A Conv2d, MaxPool2d or AvgPool2d, with the pad in front of it (``pads``) or None."""
        nn = self.nn
        if len(self.torch_shape) != 3:
            self.refuse(name, module, f"a 2-D window needs (N, C, H, W) input, the samples here "
                        f"are {self.torch_shape}")
        size = self.torch_shape[-2:]
        if isinstance(module, nn.Conv2d):
            kernel, strides = tuple(module.kernel_size), tuple(module.stride)
            dilation = tuple(module.dilation)
            if module.groups != 1 or module.padding_mode != "zeros":
                self.refuse(name, module, "groups and padding modes other than zeros have no "
                            "chainrule equivalent")
            own = module.padding
        else:
            kernel = _pair(module.kernel_size)
            strides = _pair(module.stride if module.stride is not None else kernel)
            dilation = (1, 1)
            if module.ceil_mode:
                self.refuse(name, module, "ceil_mode=True rounds the output size up; chainrule "
                            "rounds down")
            if isinstance(module, nn.MaxPool2d) and (_pair(module.dilation) != (1, 1)
                                                     or module.return_indices):
                self.refuse(name, module, "dilation and return_indices have no chainrule "
                            "equivalent")
            if isinstance(module, nn.AvgPool2d) and (module.divisor_override is not None or (
                    not module.count_include_pad and _pair(module.padding) != (0, 0))):
                self.refuse(name, module, "chainrule's AvgPool2D divides by kh·kw, padding "
                            "included (count_include_pad=True, no divisor_override)")
            own = _pair(module.padding)
        if pads is not None:
            if own not in ((0, 0), "valid"):
                self.refuse(name, module, "a pad in front and padding of its own")
            same = pad_amounts("same", size, kernel, strides, dilation)
            if tuple(map(tuple, pads)) != same:
                self.refuse(name, module, f"the pad in front, {pads}, is not chainrule's 'same' "
                            f"({same}) for a {size[0]}×{size[1]} input")
            padding = "same"
        elif own == "same":
            padding = "same"  # torch allows it at stride 1 only, where the rules agree
        elif own == "valid" or tuple(own) == (0, 0):
            padding = "valid"
        else:
            padding = tuple(own)
        try:
            if isinstance(module, nn.Conv2d):
                arrays = {"W": _array(module.weight)}
                if module.bias is not None:
                    arrays["b"] = _array(module.bias)
                layer = L.Conv2D(module.out_channels, kernel, strides=strides, padding=padding,
                                 dilation=dilation, use_bias=module.bias is not None)
            else:
                cls = L.MaxPool2D if isinstance(module, nn.MaxPool2d) else L.AvgPool2D
                layer, arrays = cls(kernel, strides=strides, padding=padding), {}
        except ValueError as exc:
            self.refuse(name, module, str(exc))
        if isinstance(module, nn.Conv2d):
            channels = self.torch_shape[0]
            if module.in_channels != channels:
                self.refuse(name, module, f"it takes {module.in_channels} channels, the input "
                            f"here has {channels}")
            self.virtual = False
        self.add(layer, arrays, name, module)

    def _batchnorm(self, name, module) -> None:
        if not module.affine or not module.track_running_stats or module.momentum is None:
            self.refuse(name, module, "chainrule's BatchNorm has γ and β, running statistics and "
                        "a momentum (not the cumulative average of momentum=None)")
        arrays = {"gamma": _array(module.weight), "beta": _array(module.bias),
                  "running_mean": _array(module.running_mean),
                  "running_var": _array(module.running_var)}
        self.add(L.BatchNorm(momentum=float(module.momentum), eps=float(module.eps)), arrays,
                 name, module)


def _pair(value):
    return tuple(value) if isinstance(value, tuple | list) else (value, value)
