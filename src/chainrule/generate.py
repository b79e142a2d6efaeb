"""Character language models at work: their examples, their loss in nats per character, and
new words sampled from them.

A language model here is a Sequential built for a fixed context of C ids (``input_shape``
(C,)) that outputs either the logits of the next character, (N, V), for a window model (the
MLP), or the logits at every position, (N, T, V) with T = C, for a sequence model (LSTM, GPT).
``is_sequence_model`` tells them apart by the output's shape.

Sampling is vectorized over the words and autoregressive over the characters: every step runs
one forward pass for all n words, draws each word's next character from
softmax(logits / temperature), and stops a word at its end token. A sequence model is built for
T positions; its input is each word so far, read in rows of T as in training (positions past
the last character hold padding, which a causal model never looks at). A window model reads
the last C characters, left-padded with the boundary token. A word has at least one
character: the end token is not drawn first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import functional as F
from .data.text import IGNORE_INDEX, Vocabulary, context_examples, sequence_examples
from .runs import MODEL
from .serialization import load_model

#: The longest word ``sample_words`` writes by default (it stops a word there).
MAX_WORD_LENGTH = 40
#: The most words one ``sample_words`` call draws.
MAX_SAMPLES = 100_000


def context_length(model) -> int:
    """C: the number of ids the (built) language model reads.

    Raises:
        ValueError: for a model that is not built for (N, C) integer ids.
    """
    shape = model.input_shape
    if not model.built or shape is None or len(shape) != 1 or not model.layers[0].integer_input:
        raise ValueError(
            f"expected a language model built for (N, C) character ids, got model "
            f"{model.name!r} with input shape {shape}"
        )
    return int(shape[0])


def is_sequence_model(model) -> bool:
    """True when ``model`` predicts every position ((N, T, V) logits), False for a window model
    ((N, V) logits)."""
    return len(model.output_shape) == 2


def examples(model, words, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``words`` for ``model``: ``sequence_examples`` for a sequence model,
    ``context_examples`` for a window model, at the model's context length."""
    make = sequence_examples if is_sequence_model(model) else context_examples
    return make(words, vocab, context_length(model))


def nats_per_char(model, x, y, batch_size: int = 512) -> float:
    """The mean of −log p(target) over every target character (and word end) of (x, y), in
    nats; padded targets (``IGNORE_INDEX``) are left out. Divide by ln 2 for bits per character.

    Shapes: x (N, C) ids; y (N,) for a window model, (N, T) for a sequence model.
    """
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model.predict(x[start:start + batch_size], batch_size=batch_size)
        target = np.asarray(y[start:start + batch_size]).reshape(-1)
        log_p = F.log_softmax(logits.reshape(len(target), -1))
        kept = np.flatnonzero(target != IGNORE_INDEX)
        total -= float(np.sum(log_p[kept, target[kept]], dtype=np.float64))
        count += len(kept)
    return total / count


def next_char_probabilities(model, contexts, temperature: float = 1.0) -> np.ndarray:
    """p(next character | context) for each row of ``contexts``: softmax(logits / temperature).

    Args:
        model: a language model (see the module docstring).
        contexts: (n, t) ids, the start token (0) first for a word's beginning, t ≤ the model's
            context C. A window model reads them left-padded with the boundary to C; a sequence
            model at positions 0 … t − 1, its prediction read at t − 1.
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.

    Returns:
        (n, V) probabilities, each row summing to 1.

    Raises:
        ValueError: for a context longer than the model's, or an invalid temperature.
    """
    temperature = check_temperature(temperature)
    contexts = np.asarray(contexts)
    limit = context_length(model)
    if contexts.ndim != 2 or contexts.shape[1] == 0:
        raise ValueError(f"expected contexts of shape (n, t) with t >= 1, got {contexts.shape}")
    n, t = contexts.shape
    if t > limit:
        raise ValueError(
            f"a context of {t} characters is longer than the model's {limit} (it was built to "
            f"read at most {limit}); pass the last {limit}, as sample_words does"
        )
    window = np.zeros((n, limit), dtype=np.int64)
    if is_sequence_model(model):
        window[:, :t] = contexts
        logits = model.predict(window)[:, t - 1]
    else:
        window[:, limit - t:] = contexts
        logits = model.predict(window)
    return F.softmax(logits / np.asarray(temperature, dtype=logits.dtype))


def check_temperature(temperature) -> float:
    """``temperature`` as a float if it is a finite number > 0.

    Raises:
        ValueError: otherwise.
    """
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(temperature, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def sample_words(model, vocab: Vocabulary, n: int = 20, temperature: float = 1.0,
                 seed: int | None = None, prefix: str = "",
                 max_length: int = MAX_WORD_LENGTH) -> list[str]:
    """``n`` words drawn from the model, one character at a time until each word's end token.

    Args:
        model: a language model over ``vocab`` (its output has len(vocab) classes).
        vocab: the model's characters.
        n: how many words, 1 … ``MAX_SAMPLES``.
        temperature: > 0, as in :func:`next_char_probabilities`.
        seed: seeds the draws: the same seed gives the same words.
        prefix: characters every word starts with (each must be in ``vocab``).
        max_length: a word still going at this many characters is cut there.

    Returns:
        The words (the prefix included), in order of drawing.

    Raises:
        ValueError: for a character of ``prefix`` outside the vocabulary, a prefix of
            ``max_length`` characters or more, an invalid n, temperature or max_length, or a
            model whose output size is not len(vocab).
    """
    temperature = check_temperature(temperature)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be an integer in 1 … {MAX_SAMPLES:,}, got {n!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int | np.integer) or (
            max_length < 1):
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    classes = model.output_shape[-1]
    if classes != len(vocab):
        raise ValueError(f"the model predicts {classes} classes but the vocabulary has "
                         f"{len(vocab)} tokens; pass the vocabulary the model was trained with")
    start = vocab.encode(prefix, "prefix")
    if len(start) >= max_length:
        raise ValueError(f"prefix {prefix!r} has {len(start)} characters; max_length is "
                         f"{max_length}, so there is nothing left to sample")
    rng = np.random.default_rng(seed)
    limit, sequence = context_length(model), is_sequence_model(model)
    # stream[:, 0] is the start token, then the prefix, then the sampled characters.
    stream = np.zeros((int(n), max_length + 1), dtype=np.int64)
    stream[:, 1:1 + len(start)] = start
    ended = np.zeros(int(n), dtype=bool)
    for p in range(len(start), max_length):
        # The ids up to position p: a sequence model reads them in rows of T as it was
        # trained (the row holding p starts at a multiple of T), a window model the last C.
        first = (p // limit) * limit if sequence else max(0, p + 1 - limit)
        probs = next_char_probabilities(model, stream[:, first:p + 1], temperature)
        if p == 0:
            # A word has at least one character: the end token cannot come first.
            probs[:, 0] = 0.0
        # Inverse-CDF draw, one uniform number per word; clipped for rows whose cumulative
        # sum rounds below 1.
        cdf = np.cumsum(probs, axis=1)
        u = rng.random((int(n), 1)) * cdf[:, -1:]
        nxt = np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1)
        nxt[ended] = 0
        stream[:, p + 1] = nxt
        ended |= nxt == 0
        if ended.all():
            break
    return [vocab.decode(row[1:]) for row in stream]


def load_language_model(source):
    """(model, vocabulary) from a run folder of ``lm train`` or its model.npz.

    Raises:
        FileNotFoundError: without a model file. ValueError: for a model that holds no
            vocabulary (not written by ``lm train``) or does not fit it.
    """
    path = Path(source)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"no model at {path}: pass a run folder written by chainrule lm train, or its "
            f"{MODEL}")
    model = load_model(path, compile=False)
    chars = model.metadata.get("vocab") if isinstance(model.metadata, dict) else None
    if not isinstance(chars, str) or not chars:
        raise ValueError(f"{path} holds no vocabulary in its metadata: it was not written by "
                         "chainrule lm train")
    vocab = Vocabulary(chars)
    context_length(model)
    if model.output_shape[-1] != len(vocab):
        raise ValueError(f"{path}: the model predicts {model.output_shape[-1]} classes, its "
                         f"vocabulary has {len(vocab)} tokens")
    return model, vocab
