"""Model presets: ready-to-train Sequential models with settings that train well on MNIST, and
character-level language models (``LM_PRESETS``) that train on English words in minutes."""

from __future__ import annotations

from . import layers, losses, optimizers, schedules
from .model import Sequential

PRESETS = ("softmax", "mlp", "cnn")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "constant")

# The presets' training settings, written once: the functions below and ``chainrule train``
# both read them. The learning rates are Adam's (also used for AdamW and RMSprop) and SGD's
# (with Nesterov momentum 0.9).
DEFAULT_EPOCHS = {"softmax": 10, "mlp": 15, "cnn": 10}
DEFAULT_LR = {"softmax": {"adam": 1e-2, "sgd": 0.5},
              "mlp": {"adam": 2e-3, "sgd": 0.1},
              "cnn": {"adam": 2e-3, "sgd": 0.05}}
DEFAULT_DROPOUT = {"softmax": None, "mlp": 0.2, "cnn": 0.3}
DEFAULT_HIDDEN = (256, 256)
# The RandomShift's max_shift in pixels (0: no augmentation).
DEFAULT_AUGMENT = {"softmax": None, "mlp": 1, "cnn": 2}


def default_lr(preset: str, optimizer: str = "adam") -> float:
    """The preset's initial learning rate for ``optimizer`` (see ``DEFAULT_LR``)."""
    return DEFAULT_LR[preset]["sgd" if optimizer == "sgd" else "adam"]


def make_optimizer(name: str = "adam", lr: float = 1e-3, total_steps: int | None = None,
                   schedule: str = "cosine") -> optimizers.Optimizer:
    """The optimizer the presets train with: ``name`` at ``lr``, cosine-decayed to 0 over
    ``total_steps`` (when given and ``schedule`` is "cosine"); SGD with Nesterov momentum 0.9.

    Decaying the rate to zero over the last epochs is worth about 0.1–0.3 points of MNIST test
    accuracy over a constant rate for the same number of epochs.

    Raises:
        ValueError: for an unknown optimizer or schedule name.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}")
    rate = lr
    if schedule == "cosine" and total_steps:
        rate = schedules.CosineDecay(lr, T_max=total_steps, per="step")
    if name == "sgd":
        return optimizers.SGD(rate, momentum=0.9, nesterov=True)
    return optimizers.OPTIMIZERS.get(name)(rate)


def default_optimizer(lr: float = 1e-3, epochs: int | None = None,
                      steps_per_epoch: int | None = None) -> optimizers.Adam:
    """Adam(lr), cosine-decayed to 0 over the whole run when its length is known."""
    total = epochs * steps_per_epoch if epochs and steps_per_epoch else None
    return make_optimizer("adam", lr, total)


def build(preset: str, num_classes: int = 10, input_shape=(28, 28), seed: int | None = None,
          hidden=None, dropout: float | None = None, augment: int | None = None,
          dtype: str = "float32") -> Sequential:
    """The named preset with the given settings (None: the preset's default), built and
    compiled as its function does: what ``chainrule train --model NAME`` trains.

    Raises:
        ValueError: for an unknown preset.
    """
    common = dict(num_classes=num_classes, input_shape=input_shape, seed=seed, dtype=dtype)
    if preset == "softmax":
        return softmax_regression(**common)
    dropout = DEFAULT_DROPOUT.get(preset) if dropout is None else dropout
    if preset == "mlp":
        return mlp(hidden=DEFAULT_HIDDEN if hidden is None else hidden, dropout=dropout,
                   augment=augment, **common)
    if preset == "cnn":
        return cnn(dropout=dropout, augment=DEFAULT_AUGMENT["cnn"] if augment is None else augment,
                   **common)
    raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")


def _compile(model: Sequential, lr: float, epochs, steps_per_epoch) -> Sequential:
    model.compile(
        optimizer=default_optimizer(lr, epochs, steps_per_epoch),
        loss=losses.SparseCategoricalCrossEntropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def softmax_regression(num_classes: int = 10, input_shape=(28, 28),
                       lr: float = DEFAULT_LR["softmax"]["adam"],
                       epochs: int | None = None, steps_per_epoch: int | None = None,
                       seed: int | None = None, dtype: str = "float32") -> Sequential:
    """The lecture's model: z = W x + b, a = softmax(z), trained on the fused cross-entropy.

    Flatten → Dense(num_classes) with zero-initialised W (the loss is convex, so any start
    works and zeros make runs comparable). The softmax lives in the loss
    (``from_logits=True``), whose gradient is a − y. Compiled with Adam(1e-2), cosine-decayed
    over ``epochs`` × ``steps_per_epoch`` steps when both are given.

    Args:
        num_classes: C.
        input_shape: one sample's shape, (28, 28) for MNIST images or (784,) for flat vectors.
        lr: initial learning rate.
        epochs, steps_per_epoch: length of the run, for the learning-rate decay.
        seed: weight/shuffle seed. dtype: "float32" or "float64".

    Returns:
        A built and compiled Sequential.
    """
    model = Sequential(
        [
            layers.Flatten(input_shape=input_shape),
            layers.Dense(num_classes, kernel_initializer="zeros"),
        ],
        dtype=dtype,
        seed=seed,
        name="softmax_regression",
    )
    return _compile(model, lr, epochs, steps_per_epoch)


def mlp(hidden=DEFAULT_HIDDEN, activation: str = "relu", dropout: float = DEFAULT_DROPOUT["mlp"],
        num_classes: int = 10, input_shape=(28, 28), augment: int | None = None,
        lr: float = DEFAULT_LR["mlp"]["adam"], epochs: int | None = None,
        steps_per_epoch: int | None = None, seed: int | None = None,
        dtype: str = "float32") -> Sequential:
    """A multi-layer perceptron:
    (RandomShift →) Flatten → [Dense(h) → activation (→ Dropout)] × k → Dense(C).

    Hidden layers use He-normal initialisation for ReLU-family activations (it keeps the
    activation variance constant with depth) and Glorot-uniform otherwise. Compiled with
    Adam(2e-3), cosine-decayed over the run when its length is given, on the fused
    cross-entropy. An MLP has no notion of a pixel's neighbours, so a digit moved by one pixel
    is a new input to it: training on randomly shifted images (``augment``) teaches it that
    (over seeds 0–3, 15 epochs reached 98.77–98.90% test accuracy with shifts of up to 1 pixel,
    98.39–98.58% without).

    Args:
        hidden: units of each hidden layer.
        activation: "relu", "leaky_relu", "tanh" or "sigmoid".
        dropout: rate of a Dropout after each hidden activation (0 disables; 0.2 by default,
            as ``chainrule train --model mlp``).
        augment: max_shift in pixels of a RandomShift before the Flatten (training only; 0
            leaves the layer out). None: ``DEFAULT_AUGMENT["mlp"]`` for images (an input_shape
            (H, W) or (C, H, W)), 0 for vectors.
        num_classes, input_shape, lr, epochs, steps_per_epoch, seed, dtype: as in
            :func:`softmax_regression`.

    Returns:
        A built and compiled Sequential.

    Raises:
        ValueError: for empty or non-positive hidden sizes, or ``augment`` > 0 with an
            input_shape that is not an image's.
    """
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) <= 0:
        raise ValueError(f"mlp: hidden must be a non-empty list of positive sizes, got {hidden}")
    image = len(tuple(input_shape)) in (2, 3)
    if augment is None:
        augment = DEFAULT_AUGMENT["mlp"] if image else 0
    if augment and not image:
        raise ValueError(
            f"mlp: augment shifts images, of input_shape (H, W) or (C, H, W), got input_shape "
            f"{tuple(input_shape)}; pass augment=0 for vectors"
        )
    init = "he_normal" if activation in ("relu", "leaky_relu") else "glorot_uniform"
    stack: list[layers.Layer] = (
        [layers.RandomShift(augment, input_shape=input_shape), layers.Flatten()] if augment
        else [layers.Flatten(input_shape=input_shape)])
    for units in hidden:
        stack.append(layers.Dense(units, activation=activation, kernel_initializer=init))
        if dropout:
            stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(num_classes))
    model = Sequential(stack, dtype=dtype, seed=seed, name="mlp")
    return _compile(model, lr, epochs, steps_per_epoch)


def cnn(num_classes: int = 10, input_shape=(28, 28), dropout: float = DEFAULT_DROPOUT["cnn"],
        augment: int = DEFAULT_AUGMENT["cnn"], lr: float = DEFAULT_LR["cnn"]["adam"],
        epochs: int | None = None, steps_per_epoch: int | None = None,
        seed: int | None = None, dtype: str = "float32") -> Sequential:
    """A LeNet-style convolutional network for 28×28 digits, batch-normalised throughout:

        input (1, 28, 28)
        RandomShift(2)              (training only: each image moved by up to 2 pixels)
        Conv2D(32, 5) → BatchNorm → MaxPool2D(2) → ReLU     (32, 12, 12)
        Conv2D(64, 5) → BatchNorm → MaxPool2D(2) → ReLU     (64, 4, 4)
        Flatten → Dense(256) → BatchNorm → ReLU → Dropout   (256,)
        Dense(num_classes)                                   logits

    About 4 M multiply-adds per image by im2col. Conv2D's default ``algorithm="auto"`` runs the
    first convolution (one input channel) as im2col and one matrix product, the second
    (32 → 64 channels on 12×12) in the frequency domain, with about a third of im2col's
    multiply-adds in training (``Conv2D.multiply_adds``, ``layers.fourier``).
    Convolutions and the hidden Dense use He-normal initialisation and no bias (the following
    BatchNorm's β plays that role). Compiled with Adam(2e-3), cosine-decayed over the run when
    its length is given (with 1e-3 the median test accuracy of seeds 0–3 after 10 epochs was
    99.49%, with 2e-3 99.53%: ``benchmarks/accuracy.py --models cnn --seeds 0,1,2,3``).
    ReLU comes after the max-pooling: the two commute (ReLU is increasing, so
    max(relu(a)) = relu(max(a))), and on the pooled map it costs a quarter.

    Args:
        num_classes: C.
        input_shape: one sample's shape: (28, 28) or (1, 28, 28).
        dropout: rate of the Dropout before the output layer.
        augment: the RandomShift's max_shift in pixels (0 leaves the layer out). Without it
            the same network reached 99.45% in 10 epochs on seed 0 (99.56% with it).
        lr, epochs, steps_per_epoch, seed, dtype: as in :func:`softmax_regression`.

    Returns:
        A built and compiled Sequential.
    """

    def conv_block(filters, **kwargs):
        return [
            layers.Conv2D(filters, 5, use_bias=False, kernel_initializer="he_normal", **kwargs),
            layers.BatchNorm(),
            layers.MaxPool2D(2),
            layers.ReLU(),
        ]

    stack: list[layers.Layer] = []
    if augment:
        stack.append(layers.RandomShift(augment, input_shape=input_shape))
    stack += [
        *conv_block(32, **({} if augment else {"input_shape": input_shape})),
        *conv_block(64),
        layers.Flatten(),
        layers.Dense(256, use_bias=False, kernel_initializer="he_normal"),
        layers.BatchNorm(),
        layers.ReLU(),
    ]
    if dropout:
        stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(num_classes))
    model = Sequential(stack, dtype=dtype, seed=seed, name="cnn")
    return _compile(model, lr, epochs, steps_per_epoch)


# ---------------------------------------------------------------------- language models
LM_PRESETS = ("mlp", "lstm", "gpt")

# Each language model's architecture and training recipe, written once: the functions below,
# ``chainrule lm train`` and benchmarks/lm.py all read them. "context" is the number of
# characters the model reads: the MLP's window, the LSTM's and GPT's sequence length T.
# The sizes train in a few minutes on 2 CPU cores on the ~51,000 training words of
# /usr/share/dict/words (see LM_RECIPE for the epochs).
LM_ARCH = {
    "mlp": {"context": 5, "embed": 24, "hidden": 384},
    "lstm": {"context": 16, "embed": 32, "units": 128},
    "gpt": {"context": 16, "width": 64, "heads": 4, "blocks": 4},
}
# AdamW with torch's default weight decay, cosine-decayed to 0 over the run. batch_size counts
# windows for the MLP (one target character each) and words (rows of T positions) for the
# sequence models: a step sees 256 target characters (MLP) or about 600 (64 words).
LM_RECIPE = {
    "mlp": {"epochs": 10, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.01},
    "lstm": {"epochs": 8, "batch_size": 64, "lr": 5e-3, "weight_decay": 0.01},
    "gpt": {"epochs": 6, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.01},
}
#: The longest context a language model may be given (``--context``): far more than a word
#: needs (the longest in the word list has 22 letters), and the examples of a much longer one
#: would not fit in memory (51,000 rows of T int64 ids each, twice).
MAX_LM_CONTEXT = 64


def _check_lm_preset(preset: str) -> None:
    if preset not in LM_PRESETS:
        raise ValueError(f"unknown language model {preset!r}; expected one of {list(LM_PRESETS)}")


def char_mlp(vocab_size: int, context: int = LM_ARCH["mlp"]["context"],
             embed: int = LM_ARCH["mlp"]["embed"], hidden: int = LM_ARCH["mlp"]["hidden"],
             seed: int | None = None, dtype: str = "float32") -> Sequential:
    """Bengio et al.'s neural probabilistic language model, on characters:

        ids (N, context)  →  Embedding(V, embed)          (N, context, embed)
        Flatten → Dense(hidden) → Tanh                   (N, hidden)
        Dense(V)                                          logits of the next character (N, V)

    The window's characters are looked up in one shared table C and their vectors concatenated:
    z = tanh([C x₁, …, C x_k] W₁ + b₁) W₂ + b₂ (without the paper's direct input-to-output
    connections). Not compiled: see :func:`build_lm`.

    Args:
        vocab_size: V, the characters and the boundary token.
        context: k, the characters the model reads.
        embed, hidden: the vector size per character and the hidden layer's width.
        seed, dtype: as in :func:`softmax_regression`.
    """
    return Sequential([
        layers.Embedding(vocab_size, embed, input_shape=(context,)),
        layers.Flatten(),
        layers.Dense(hidden, activation="tanh"),
        layers.Dense(vocab_size),
    ], dtype=dtype, seed=seed, name="char_mlp")


def char_lstm(vocab_size: int, context: int = LM_ARCH["lstm"]["context"],
              embed: int = LM_ARCH["lstm"]["embed"], units: int = LM_ARCH["lstm"]["units"],
              seed: int | None = None, dtype: str = "float32") -> Sequential:
    """An LSTM language model: every position predicts the next character.

        ids (N, T)  →  Embedding(V, embed)  →  LSTM(units, return_sequences=True)  (N, T, units)
                    →  Dense(V)                                    logits (N, T, V)

    Args:
        vocab_size: V.  context: T.  embed: the vector size per character.  units: H.
        seed, dtype: as in :func:`softmax_regression`.
    """
    return Sequential([
        layers.Embedding(vocab_size, embed, input_shape=(context,)),
        layers.LSTM(units, return_sequences=True),
        layers.Dense(vocab_size),
    ], dtype=dtype, seed=seed, name="char_lstm")


def gpt(vocab_size: int, context: int = LM_ARCH["gpt"]["context"],
        width: int = LM_ARCH["gpt"]["width"], heads: int = LM_ARCH["gpt"]["heads"],
        blocks: int = LM_ARCH["gpt"]["blocks"], seed: int | None = None,
        dtype: str = "float32") -> Sequential:
    """A small GPT (GPT-2's layout, pre-LayerNorm blocks) over characters:

        ids (N, T)  →  Embedding(V, E) → PositionalEmbedding(T)              (N, T, E)
        blocks × [ Residual(LayerNorm → CausalSelfAttention(heads)),
                   Residual(LayerNorm → Dense(4E) → GELU(tanh) → Dense(E)) ]
        LayerNorm → Dense(V)                                                logits (N, T, V)

    The default, 4 blocks of width 64 with 4 heads over 16 positions, has about 200,000
    parameters. Not compiled: see :func:`build_lm`.

    Args:
        vocab_size: V.  context: T, the longest input (the positional table's length).
        width: E.  heads: attention heads (E must be divisible by it).  blocks: transformer
            blocks.  seed, dtype: as in :func:`softmax_regression`.
    """
    stack = [layers.Embedding(vocab_size, width, input_shape=(context,)),
             layers.PositionalEmbedding(context)]
    for _ in range(blocks):
        stack += [
            layers.Residual([layers.LayerNorm(), layers.CausalSelfAttention(heads)]),
            layers.Residual([layers.LayerNorm(), layers.Dense(4 * width),
                             layers.GELU("tanh"), layers.Dense(width)]),
        ]
    stack += [layers.LayerNorm(), layers.Dense(vocab_size)]
    return Sequential(stack, dtype=dtype, seed=seed, name="gpt")


def lm_loss() -> losses.SparseCategoricalCrossEntropy:
    """The language models' loss: cross-entropy on logits, padded targets (−100) left out."""
    return losses.SparseCategoricalCrossEntropy(from_logits=True, ignore_index=-100)


def build_lm(preset: str, vocab_size: int, seed: int | None = None, context: int | None = None,
             lr: float | None = None, weight_decay: float | None = None,
             total_steps: int | None = None, dtype: str = "float32") -> Sequential:
    """The named language model (``LM_ARCH``), compiled with its recipe (``LM_RECIPE``): AdamW,
    cosine-decayed to 0 over ``total_steps`` when given, on :func:`lm_loss`.

    Args:
        preset: "mlp", "lstm" or "gpt".
        vocab_size: V.  seed: weight seed.  context: overrides the preset's context.
        lr, weight_decay: override the recipe's.  total_steps: the run's optimizer steps.
        dtype: "float32" or "float64".

    Raises:
        ValueError: for an unknown preset, or a context outside 1 … ``MAX_LM_CONTEXT``.
    """
    _check_lm_preset(preset)
    arch = dict(LM_ARCH[preset])
    if context is not None:
        if isinstance(context, bool) or not isinstance(context, int) or not (
                1 <= context <= MAX_LM_CONTEXT):
            raise ValueError(f"context must be an integer in 1 … {MAX_LM_CONTEXT}, got "
                             f"{context!r}")
        arch["context"] = context
    make = {"mlp": char_mlp, "lstm": char_lstm, "gpt": gpt}[preset]
    model = make(vocab_size, seed=seed, dtype=dtype, **arch)
    recipe = LM_RECIPE[preset]
    lr = recipe["lr"] if lr is None else lr
    rate = schedules.CosineDecay(lr, T_max=total_steps, per="step") if total_steps else lr
    decay = recipe["weight_decay"] if weight_decay is None else weight_decay
    model.compile(optimizer=optimizers.AdamW(rate, weight_decay=decay), loss=lm_loss())
    return model
