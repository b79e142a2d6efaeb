"""Words for character-level language models: reading, a character vocabulary, splits and
training examples.

The default corpus is the English word list of Debian's ``wamerican`` package,
``/usr/share/dict/words`` (one word per line), kept to the words of lowercase letters a–z
(no capitals, apostrophes or accents: about 64,000 words). Any other UTF-8 text file works too:
its words are its whitespace-separated tokens, as they are.

A word is a sequence of characters ended by the boundary token ``END`` (id 0, shown as "."):

    "emma"  →  . e m m a .      (the first "." is the start, the last one the end)

Two kinds of examples come from the same words:

- ``context_examples`` (the MLP language model): one example per character to predict, its
  ``context`` preceding characters as ids, left-padded with the boundary:
  ("...", e), ("..e", m), (".em", m), ("emm", a), ("mma", .) for context 3.
- ``sequence_examples`` (LSTM and GPT): input ids x (S, T) and targets y (S, T), y the input
  shifted by one (yₜ = xₜ₊₁): x = . e m m a ., …  y = e m m a . −100 …; positions past the word's
  end are padded (input: the boundary id, target: ``IGNORE_INDEX``, which the loss leaves out).
  A word longer than T − 1 characters continues in a second row whose inputs start mid-word, so
  every character is predicted exactly once.

Both predict the same targets, the characters of each word and its end, so a loss per target is
comparable between the models: nats per character.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_WORDS",
    "END",
    "IGNORE_INDEX",
    "MAX_TEXT_BYTES",
    "Vocabulary",
    "read_words",
    "split_words",
    "context_examples",
    "sequence_examples",
]

#: Debian's ``wamerican`` word list, the default corpus (``--data words``).
DEFAULT_WORDS = Path("/usr/share/dict/words")
#: How the boundary token (id 0) is shown: the start and the end of every word.
END = "."
#: The target id of padded positions, left out of the loss (torch's default ignore_index).
IGNORE_INDEX = -100
#: The largest text file read (64 MiB): a character model of this size learns all it can from
#: far less, and a larger file is more likely a mistake (a disk image, a dataset archive).
MAX_TEXT_BYTES = 64 << 20

_LOWERCASE_WORD = re.compile(r"[a-z]+")


def read_words(source="words") -> list[str]:
    """The words of ``source``, in file order.

    Args:
        source: "words" for ``/usr/share/dict/words`` kept to lowercase a–z words, or the path of
            a UTF-8 text file, whose whitespace-separated tokens are the words.

    Returns:
        A non-empty list of words.

    Raises:
        FileNotFoundError: without the word list (naming the ``wamerican`` package) or the file.
        ValueError: for a file that is empty, has no words, is binary (a NUL byte) or is not
            UTF-8, or is larger than ``MAX_TEXT_BYTES``; each naming the file.
    """
    if str(source) == "words":
        if not DEFAULT_WORDS.is_file():
            raise FileNotFoundError(
                f"no English word list at {DEFAULT_WORDS}: install Debian's wamerican package "
                "(sudo apt-get install wamerican), or pass --data FILE with a text file of words"
            )
        text = _read_text(DEFAULT_WORDS)
        words = [w for w in text.split() if _LOWERCASE_WORD.fullmatch(w)]
        if not words:
            raise ValueError(f"{DEFAULT_WORDS} holds no word of lowercase letters a–z")
        return words
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"text file not found: {path} (pass a UTF-8 text file, or 'words' for "
            f"{DEFAULT_WORDS})" if not path.exists() else f"{path} is not a file")
    words = _read_text(path).split()
    if not words:
        raise ValueError(f"{path} holds only whitespace, no words; expected a text file of words")
    return words


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``, checked to be text first."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty; expected a text file of words")
    if size > MAX_TEXT_BYTES:
        raise ValueError(
            f"{path} holds {size:,} bytes, more than the {MAX_TEXT_BYTES >> 20} MiB a text "
            "corpus may have; pass a smaller text file"
        )
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(
            f"{path} is binary, not text (a NUL byte at offset {nul}); expected a UTF-8 text "
            "file of words"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "expected a UTF-8 text file of words"
        ) from None


class Vocabulary:
    """The characters a model reads and writes: id 0 is the boundary ``END``, ids 1 … V − 1 the
    characters in sorted order.

    Args:
        chars: the characters (any order, each once, without whitespace).

    Raises:
        ValueError: for an empty or repeated character list, or a character that is not one
            non-whitespace character.
    """

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise ValueError("Vocabulary: expected at least one character, got none")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1 or c.isspace():
                raise ValueError(f"Vocabulary: each entry must be one non-whitespace character, "
                                 f"got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("Vocabulary: a character is listed twice")
        self.chars = tuple(sorted(chars))
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_words(cls, words) -> Vocabulary:
        """The vocabulary of every character in ``words``."""
        return cls(sorted(set("".join(words))))

    def __len__(self) -> int:
        """V: the characters and the boundary."""
        return len(self.chars) + 1

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self.chars)!r})"

    def describe(self) -> str:
        """'27 tokens: the end token and a b c … z' in a few words."""
        shown = " ".join(self.chars) if len(self.chars) <= 30 else (
            " ".join(self.chars[:12]) + " … " + " ".join(self.chars[-4:]))
        return f"{len(self)} tokens: the end token '{END}' and {shown}"

    def check(self, text: str, what: str = "text") -> None:
        """Raise ValueError naming the first character of ``text`` not in the vocabulary."""
        for position, c in enumerate(text):
            if c not in self.index:
                raise ValueError(
                    f"{what} {text!r}: character {c!r} (position {position}) is not in the "
                    f"model's vocabulary ({self.describe()})"
                )

    def encode(self, word: str, what: str = "word") -> np.ndarray:
        """The ids (L,) of ``word``'s characters (without boundaries).

        Raises:
            ValueError: for a character outside the vocabulary.
        """
        self.check(word, what)
        return np.array([self.index[c] for c in word], dtype=np.int64)

    def decode(self, ids) -> str:
        """The characters of ``ids`` up to the first boundary (id 0)."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == 0:
                break
            out.append(self.chars[i - 1])
        return "".join(out)


def split_words(words, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> tuple[list, list, list]:
    """(train, validation, test): the distinct words of ``words`` shuffled by ``seed`` and cut
    at the cumulative ``fractions``.

    Duplicates are removed first (in order of first appearance), so no word is in two splits.

    Raises:
        ValueError: for fractions that are not three non-negative numbers summing to 1, or so
            few words that the training or validation split would be empty.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split_words: fractions must be three numbers >= 0 summing to 1, got "
                         f"{fractions}")
    unique = list(dict.fromkeys(words))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(fractions[0] * len(unique)))
    n_val = int(round(fractions[1] * len(unique)))
    if n_train == 0 or n_val == 0:
        raise ValueError(
            f"split_words: {len(unique)} distinct word{'s' if len(unique) != 1 else ''} leave "
            f"the {'training' if n_train == 0 else 'validation'} split empty; a corpus needs "
            "at least 10 distinct words"
        )
    shuffled = [unique[i] for i in order]
    return (shuffled[:n_train], shuffled[n_train:n_train + n_val],
            shuffled[n_train + n_val:])


def _check_context(context, what: str) -> int:
    if isinstance(context, bool) or not isinstance(context, int | np.integer) or context < 1:
        raise ValueError(f"{what}: context must be a positive integer, got {context!r}")
    return int(context)


def _encoded(words, vocab: Vocabulary, what: str) -> list[np.ndarray]:
    if len(words) == 0:
        raise ValueError(f"{what}: expected at least one word, got none")
    return [vocab.encode(w, "word") for w in words]


def context_examples(words, vocab: Vocabulary, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for a fixed-window model: every character of every word and its end, each with
    the ``context`` ids before it (left-padded with the boundary, id 0).

    Shapes: x (M, context) int64 ids, y (M,) int64 targets, M = Σ (len(word) + 1).

    Raises:
        ValueError: for no words, a non-positive context, or a character outside ``vocab``.
    """
    context = _check_context(context, "context_examples")
    encoded = _encoded(words, vocab, "context_examples")
    # One padded stream per word: context boundaries, the word, its end. Each window of
    # context + 1 consecutive ids is one example (x = the first context, y = the last).
    streams = [np.concatenate([np.zeros(context, np.int64), ids, [0]]) for ids in encoded]
    x = np.concatenate([np.lib.stride_tricks.sliding_window_view(s[:-1], context)
                        for s in streams])
    y = np.concatenate([s[context:] for s in streams])
    return np.ascontiguousarray(x), y


def sequence_examples(words, vocab: Vocabulary, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for a sequence model of ``context`` positions: the ids of ". word ." shifted by
    one, in rows of ``context`` positions, padded (see the module docstring).

    Shapes: x (S, T) int64 ids in [0, V), y (S, T) int64 targets in [0, V) or ``IGNORE_INDEX``;
    T = context; S = the number of words plus one more row per T further characters of a word
    longer than T − 1.

    Raises:
        ValueError: for no words, a non-positive context, or a character outside ``vocab``.
    """
    context = _check_context(context, "sequence_examples")
    encoded = _encoded(words, vocab, "sequence_examples")
    rows = [max(1, -(-(len(ids) + 1) // context)) for ids in encoded]
    x = np.zeros((sum(rows), context), np.int64)
    y = np.full((sum(rows), context), IGNORE_INDEX, np.int64)
    row = 0
    for ids, k in zip(encoded, rows, strict=True):
        stream = np.concatenate([[0], ids, [0]])
        for j in range(k):
            piece = stream[j * context:(j + 1) * context + 1]
            x[row, :len(piece) - 1] = piece[:-1]
            y[row, :len(piece) - 1] = piece[1:]
            row += 1
    return x, y
