"""Layer: the base class every layer derives from, holding the contract and the input checks.

The contract (see STYLE.md):

- ``build(input_shape, rng, dtype)`` creates the Parameters; ``forward`` calls it on first use.
- ``forward(x, training=False) -> y``. With ``training=True`` the layer caches exactly what its
  backward needs; at inference it caches nothing (and drops an older cache).
- ``backward(grad_y) -> grad_x`` reads that cache and the forward-time weights, *assigns* each
  ``param.grad`` and never changes a parameter value.

Subclasses implement ``_build``, ``_forward`` and ``_backward`` and keep their math free of
validation: the checks live here, once, before the math runs.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import DEFAULT_DTYPE, FLOAT_DTYPES, as_float_dtype
from ..parameter import Parameter
from ..random_state import state_array
from ..registry import Registry, is_builtin
from ..validate import construct, is_int
from ..validate import seed as seed_arg

#: chainrule's own layer classes by name (a user's subclass is never registered by itself).
LAYERS = Registry("layer class")

#: The most bytes of weights (parameters and buffers) one layer or one Sequential may create:
#: 2**33 bytes (8.6 GB), 2**31 float32 values, some 25 000 times the MNIST CNN. ``build``
#: counts what a configuration needs from ``param_shapes`` before allocating anything, so
#: a typo (``Dense(10**12)``) or a tampered model file fails at once with the number, instead
#: of exhausting memory. Read at every build: set ``chainrule.layers.base.MAX_WEIGHT_BYTES``
#: to a larger value to build larger models.
MAX_WEIGHT_BYTES = 2**33


class Layer:
    """Base class of all layers.

    Args:
        name: a name for summaries, errors and saved files; a Sequential gives unnamed layers
            unique names such as ``dense_1``.
        input_shape: the shape of one sample (without the batch axis). A Sequential whose first
            layer has it builds all its weights at construction; otherwise weights are built
            from the first input.

    Attributes:
        built: whether the parameters exist.
        dtype: the floating dtype of the parameters and activations once built.
        input_shape / output_shape: per-sample shapes once built.
        cache: what the last training forward kept for backward (``None`` at inference).
        auto_named: True when no name was given: a Sequential then numbers it (``dense_1``).
        contiguous_output: whether ``apply`` and ``backward`` return C-contiguous arrays (True,
            NumPy's default order, for a layer on its own). A Sequential sets it False for its
            layers: image layers then hand on (N, C, H, W) views of the channels-last memory
            that Conv2D's matrix product makes, instead of reordering them at every layer
            (see ``layers.layout``).
    """

    #: Set by layers that take integer ids (Embedding) instead of floating input.
    integer_input = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if is_builtin(cls) and not cls.__name__.startswith("_"):
            LAYERS.register(cls)

    def __init__(self, name: str | None = None, input_shape=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {name!r}")
        self.name = name or type(self).__name__.lower()
        self.auto_named = name is None
        self.input_shape = None if input_shape is None else as_shape(input_shape, self)
        self.output_shape = None
        self.built = False
        self.dtype: np.dtype | None = None
        self.cache = None
        self._params: list[Parameter] = []
        self._grad_shape: tuple[int, ...] | None = None
        self.contiguous_output = True

    # ------------------------------------------------------------------ building
    def build(self, input_shape, rng: np.random.Generator | None = None, dtype=None) -> None:
        """Create the parameters for samples of shape ``input_shape`` (no batch axis).

        Args:
            input_shape: per-sample input shape, e.g. ``(784,)``.
            rng: the Generator that draws initial weights (a fresh unseeded one if omitted).
            dtype: float32 (default) or float64.

        Raises:
            ValueError: for a sample shape the layer cannot take, or weights larger than
                ``MAX_WEIGHT_BYTES`` (counted from ``param_shapes`` before anything is allocated).
        """
        shape = as_shape(input_shape, self)
        self.dtype = as_float_dtype(DEFAULT_DTYPE if dtype is None else dtype)
        rng = np.random.default_rng() if rng is None else rng
        self.check_sample_shape(shape)
        params, buffers = self.param_shapes(shape), self.buffer_shapes(shape)
        if params is not None and buffers is not None:
            check_weight_budget(count_values(params) + count_values(buffers), self.dtype,
                                self.label)
        self._build(shape, rng)
        self.input_shape = shape
        self.output_shape = self.compute_output_shape(shape)
        self.built = True

    def _build(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        """Create parameters; layers without weights keep the default (nothing)."""

    def param_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
        """The shapes of the parameters ``build(input_shape)`` creates, by name, without
        creating them: what ``build`` checks against ``MAX_WEIGHT_BYTES`` and ``load_model``
        checks a file's arrays against before reading them.

        Layers with weights override it (Dense: ``{"W": (D, M), "b": (M,)}``). The default is
        ``{}`` for a layer that keeps ``Layer._build`` (it creates nothing) and None, "known
        only once built", for one that overrides ``_build`` without saying.
        """
        return {} if type(self)._build is Layer._build else None

    def buffer_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
        """The shapes of the buffers (see ``buffers``) that ``build(input_shape)`` creates, by
        name: ``{}`` by default, None for a class that overrides ``buffers`` without saying."""
        return {} if type(self).buffers is Layer.buffers else None

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape (same shape by default)."""
        return tuple(input_shape)

    def min_training_batch(self) -> int:
        """The fewest samples a training batch needs (1: any batch).

        ``Sequential.fit`` refuses a smaller ``batch_size`` and leaves out a smaller last
        batch before training starts. BatchNorm on (N, C) input needs 2.
        """
        return 1

    def check_sample_shape(self, shape: tuple[int, ...], batch: int | None = None) -> None:
        """Raise ValueError if one sample of this shape cannot go through the layer.

        ``batch`` is the batch size N when known, so that messages show the received shape.
        """

    def check_values(self, x: np.ndarray) -> None:
        """Raise ValueError for values the layer cannot take (Embedding: ids out of range).

        Run on every input, by ``forward`` and, for a model's first layer, by Sequential at
        its boundary (which calls ``apply`` directly); finiteness is checked separately.
        """

    def check_size(self, shape: tuple[int, ...], axis: int, expected: int, what: str,
                   received: str) -> None:
        """Raise ValueError unless a sample of ``shape`` has ``expected`` entries on ``axis``
        (``what`` names them: "features on the last axis", "channels on axis 1").

        ``received`` is the batch shape as the message shows it (``arguments.received_shape``).
        """
        if shape[axis] != expected:
            raise ValueError(
                f"{self.label} expected {expected} {what}, got input of shape {received}"
            )

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x, training: bool = False) -> np.ndarray:
        """Apply the layer to a batch ``x`` of shape (N, ...); see the subclass for the formula.

        Raises:
            TypeError: for a dtype the layer cannot take.
            ValueError: for an empty batch, NaN/inf values or a shape the layer was not built for.
        """
        x = self._validate_input(x)
        return self.apply(x, training)

    def apply(self, x: np.ndarray, training: bool) -> np.ndarray:
        """The layer's math on input the caller has already validated, with the cache
        bookkeeping: what ``forward`` runs after its checks, and what a Sequential (or a
        Residual) calls for every layer once it has checked the whole input at its boundary."""
        y = self.laid_out(self._forward(x, training))
        if training:
            self._grad_shape = y.shape
        else:
            self.cache = None
            self._grad_shape = None
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        """Back-propagate ``grad_y`` = dL/dy through the last training forward.

        Args:
            grad_y: upstream gradient, same shape as the last training output.
            need_input_grad: when False (the first layer of a model during ``fit``), skip
                computing dL/dx and return None; parameter gradients are still assigned.

        Returns:
            dL/dx with the shape of the forward input (None for integer inputs or when not needed).

        One training forward serves one backward: backward consumes the cache (it is released,
        so a model does not hold every layer's activations between steps), and a second
        backward needs a new forward.

        Raises:
            RuntimeError: without a preceding ``forward(x, training=True)``, or when that
                forward's backward already ran.
            ValueError: if ``grad_y`` does not have the output's shape.
        """
        if self._grad_shape is None:
            raise RuntimeError(
                f"{self.label}: backward() needs a preceding forward(x, training=True); "
                "the last forward ran at inference (training=False), none ran yet, or its "
                "backward already ran"
            )
        grad_y = np.asarray(grad_y)
        if grad_y.shape != self._grad_shape:
            raise ValueError(
                f"{self.label}: backward expected grad_y of shape {self._grad_shape} "
                f"(the output shape of the last forward), got {grad_y.shape}"
            )
        if grad_y.dtype != self.dtype:
            raise TypeError(
                f"{self.label}: backward expected grad_y of dtype {self.dtype}, "
                f"got {grad_y.dtype}"
            )
        grad_x = self._backward(grad_y, need_input_grad)
        self._grad_shape = None
        self.cache = None
        return grad_x

    def laid_out(self, array: np.ndarray) -> np.ndarray:
        """``array`` as this layer hands it on: C-contiguous (one copy if it is not) for a
        layer on its own, as it is inside a Sequential (see ``contiguous_output``). ``apply``
        passes every output through it; a ``_backward`` whose dL/dx may be a strided view
        returns it through this too."""
        if self.contiguous_output and not array.flags.c_contiguous:
            return np.ascontiguousarray(array)
        return array

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, grad_y: np.ndarray, need_input_grad: bool):
        raise NotImplementedError

    __call__ = forward

    # ------------------------------------------------------------------ checks
    def _validate_input(self, x) -> np.ndarray:
        """Check a batch before the math runs, building the layer on first use."""
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{self.label} expected a batch of shape (N, ...), got a scalar")
        if x.shape[0] == 0:
            raise ValueError(f"{self.label} received an empty batch (shape {x.shape})")
        if self.integer_input:
            if not np.issubdtype(x.dtype, np.integer):
                raise TypeError(
                    f"{self.label} expected integer ids, got dtype {x.dtype}; "
                    "cast with x.astype(np.int64)"
                )
        else:
            if x.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"{self.label} expected float32 or float64 input, got dtype {x.dtype}; "
                    "cast with x.astype(np.float32) (a Sequential casts at its boundary)"
                )
            if self.built and x.dtype != self.dtype:
                raise TypeError(
                    f"{self.label} was built for {self.dtype} input, got {x.dtype}; "
                    f"cast with x.astype(np.{self.dtype}) (a Sequential casts at its boundary)"
                )
            check_finite(x, self.label)
        # Checked before a first build too, so that the message shows the batch size.
        self.check_sample_shape(x.shape[1:], batch=x.shape[0])
        if not self.built:
            dtype = None if self.integer_input else x.dtype
            self.build(x.shape[1:], dtype=dtype)
            self.check_sample_shape(x.shape[1:], batch=x.shape[0])
        self.check_values(x)
        return x

    @property
    def label(self) -> str:
        """The layer as messages name it: ``Dense 'dense_1'``."""
        return f"{type(self).__name__} '{self.name}'"

    # ------------------------------------------------------------------ parameters & config
    def parameters(self) -> list[Parameter]:
        """The trainable Parameters in a stable order (empty before build)."""
        return list(self._params)

    def count_params(self) -> int:
        return sum(p.size for p in self._params)

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state by name: arrays the layer updates itself (BatchNorm's running
        statistics), with no gradient and no optimizer step.

        Returns the layer's own arrays, not copies; ``state_dict`` (and so ``save``) names
        them ``<layer>.<name>``. Empty by default and before build.
        """
        return {}

    def set_buffers(self, buffers: dict) -> None:
        """Overwrite buffers in place from ``{name: array}``, cast to the layer's dtype.

        Raises:
            ValueError: for a name the layer does not have or an array of the wrong shape.
        """
        own = self.buffers()
        for name, value in buffers.items():
            if name not in own:
                raise ValueError(
                    f"{self.label} has no buffer {name!r}; it has {sorted(own)}"
                )
            value = np.asarray(value)
            if value.shape != own[name].shape:
                raise ValueError(
                    f"{self.label}: buffer {name!r} has shape {own[name].shape}, got "
                    f"{value.shape}"
                )
            own[name][...] = value

    def state_entries(self) -> list[tuple[str, str, np.ndarray]]:
        """(name, kind, array) for all of this layer's state, in a stable order: each parameter
        ("param", under ``Parameter.name``), each buffer ("buffer"), then the state of the
        layer's own random Generator ("rng", as ``random_state.state_array``) for a layer that
        draws (Dropout, RandomShift). Arrays are the layer's own, except the rng state.

        ``Sequential.state_dict`` names them ``<layer>.<name>``; empty before build.
        """
        entries = [(p.name, "param", p.value) for p in self._params]
        entries += [(name, "buffer", value) for name, value in self.buffers().items()]
        if isinstance(getattr(self, "rng", None), np.random.Generator):
            entries.append(("rng", "rng", state_array(self.rng)))
        return entries

    def get_config(self) -> dict:
        """JSON-able constructor arguments: ``type(layer)(**config)`` makes an unbuilt twin."""
        config = {"name": self.name}
        if self.input_shape is not None and not self.built:
            config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Layer:
        """``cls(**config)``; ValueError for a key the constructor does not take.

        ``custom_objects`` (name → class, as in ``load_model``) is for containers, which
        rebuild their inner layers from their own config (Residual); other layers ignore it.
        """
        return construct(cls, config)

    def twin(self) -> Layer:
        """A new, unbuilt layer of this layer's own class, settings and name (no weights)."""
        twin = type(self).from_config({**self.get_config(), "input_shape": None})
        twin.name = self.name
        return twin

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args}{', ' if args else ''}name={self.name!r})"


class RandomLayer(Layer):
    """Base of the layers that draw random numbers in training (Dropout's masks, RandomShift's
    offsets) from a Generator of their own, ``rng``: seeded by ``seed``, or, when that is None,
    from the Generator that builds the model, so that a model's seed makes training
    reproducible either way. Its state is part of ``state_entries`` ("rng").

    Args:
        seed: seed of the layer's Generator (None: derived from the model's).
    """

    def __init__(self, seed: int | None = None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self.seed = seed_arg(seed, "seed", type(self).__name__)
        self.rng: np.random.Generator | None = None

    def param_shapes(self, input_shape):
        return {}

    def _build(self, input_shape, rng):
        self.rng = new_generator(self.seed, rng)


def new_generator(seed: int | None, rng: np.random.Generator) -> np.random.Generator:
    """A layer's own Generator: seeded by ``seed``, or by a number drawn from ``rng`` (the
    Generator that builds the model) when ``seed`` is None."""
    return np.random.default_rng(seed if seed is not None else int(rng.integers(2**63)))


def check_finite(x: np.ndarray, where: str) -> None:
    """Raise ValueError naming ``where`` if ``x`` holds NaN or inf."""
    # A NaN or inf anywhere makes the sum NaN or inf: one pass with no temporary array. Only a
    # non-finite sum (possibly an overflow of finite values) needs the exact element-wise test.
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(x, axis=None)
    if np.isfinite(total):
        return
    if not np.isfinite(x).all():
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(
            f"{where} received non-finite input: {bad} of {x.size} values are NaN or inf"
        )


def count_values(shapes: dict[str, tuple[int, ...]]) -> int:
    """The number of values in arrays of these shapes."""
    return sum(math.prod(shape) for shape in shapes.values())


def describe_bytes(n: int) -> str:
    """A byte count for messages, in decimal units: '4.0 TB', '8.6 GB', '512 bytes'."""
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6),
                       ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def describe_count(n: int) -> str:
    """'1.0e12' for large counts, '12,345' below a million."""
    if n < 10**6:
        return f"{n:,}"
    exponent = len(str(n)) - 1
    mantissa = n / 10**exponent
    if round(mantissa, 1) >= 10:
        exponent, mantissa = exponent + 1, mantissa / 10
    return f"{mantissa:.1f}e{exponent}"


def check_weight_budget(count: int, dtype, what: str, detail: str = "") -> None:
    """Raise ValueError if ``count`` values of ``dtype`` exceed ``MAX_WEIGHT_BYTES``.

    Args:
        what: who needs them, e.g. ``"Dense 'dense_1'"`` or ``"this model"``.
        detail: appended after the counts, e.g. which layer needs the most.
    """
    dtype = np.dtype(dtype)
    need = count * dtype.itemsize
    if need > MAX_WEIGHT_BYTES:
        raise ValueError(
            f"{what} needs {describe_bytes(need)} of weights ({describe_count(count)} "
            f"parameters, {dtype.name}){detail}; the limit is {describe_bytes(MAX_WEIGHT_BYTES)} "
            "(chainrule.layers.base.MAX_WEIGHT_BYTES): use smaller layers, or raise the limit "
            "if the machine has the memory"
        )


def as_shape(shape, layer) -> tuple[int, ...]:
    """A per-sample shape (an int or a sequence of ints) as a tuple of positive ints.

    Raises:
        TypeError: for anything but ints (floats, bools and strings included), naming the layer.
        ValueError: for a dimension <= 0.
    """
    if is_int(shape):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or isinstance(shape, str | bytes) or not all(is_int(s) for s in dims):
        raise TypeError(
            f"{type(layer).__name__}: input_shape must be a tuple of ints, got {shape!r}"
        )
    dims = tuple(int(s) for s in dims)
    if any(s <= 0 for s in dims):
        raise ValueError(f"{type(layer).__name__}: input_shape must be positive, got {dims}")
    return dims


def register(cls: type[Layer]) -> type[Layer]:
    """Register a layer class of your own so that saved models name it (usable as a decorator).

    Without registering, a model holding the class still saves; ``load_model`` then needs the
    class passed as ``custom_objects={"Name": Name}``.

    Raises:
        TypeError: if ``cls`` is not a Layer subclass.
        ValueError: if another class already holds its name (chainrule's own ``Tanh``, say).
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register expects a Layer subclass, got {cls!r}")
    return LAYERS.register(cls)


def layer_spec(layer: Layer) -> dict:
    """``{"class_name", "config"}`` for a saved architecture, plus ``"module"`` for a class
    defined outside chainrule, so that loading never mistakes it for a built-in namesake."""
    cls = type(layer)
    spec = {"class_name": cls.__name__, "config": layer.get_config()}
    if not is_builtin(cls):
        spec["module"] = cls.__module__
    return spec


def make_layer(spec: dict, custom_objects: dict | None = None) -> Layer:
    """Rebuild a layer from a :func:`layer_spec` dict.

    Args:
        spec: ``{"class_name": ..., "config": ..., ["module": ...]}``.
        custom_objects: name → class for classes defined outside chainrule.

    Raises:
        ValueError: for an unknown class name, a class saved from another module that was
            neither passed in ``custom_objects`` nor registered from that module, or a config
            its constructor refuses.
    """
    return layer_class(spec, custom_objects).from_config(spec["config"],
                                                         custom_objects=custom_objects)


def layer_class(spec: dict, custom_objects: dict | None = None) -> type[Layer]:
    """The class a :func:`layer_spec` dict names (see :func:`make_layer`).

    Raises:
        ValueError: as :func:`make_layer`, for the class.
    """
    name, module = spec["class_name"], spec.get("module")
    if custom_objects and name in custom_objects:
        cls = custom_objects[name]
    elif module is None:
        cls = LAYERS.get(name)
    else:
        cls = LAYERS.get(name) if name in LAYERS else None
        if cls is None or cls.__module__ != module:
            raise ValueError(
                f"layer class {name!r} was saved from module {module!r}, not from chainrule; "
                f"pass custom_objects={{{name!r}: {name}}} (the class itself) to rebuild it"
            )
    return cls
