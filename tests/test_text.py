"""Words for the language models: reading (the word list and any text file), the vocabulary,
the seeded split, and the two kinds of examples, each checked against hand-written ones."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.data import text
from chainrule.data.text import IGNORE_INDEX, Vocabulary


@pytest.fixture
def abc():
    return Vocabulary("abcdefghijklmnopqrstuvwxyz")


def ids(vocab, s):
    """'.emma.' → ids, '.' the boundary."""
    return [0 if c == "." else vocab.index[c] for c in s]


# ---------------------------------------------------------------------- reading
def test_the_word_list_is_kept_to_lowercase_words():
    words = text.read_words("words")
    assert len(words) > 50_000
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    raw = text.DEFAULT_WORDS.read_text().split()
    assert any(not w.islower() or "'" in w for w in raw)  # there was something to filter
    assert len(words) == sum(1 for w in raw if w.isascii() and w.isalpha() and w.islower())


def test_a_text_file_gives_its_whitespace_separated_tokens(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Hello, wörld\n\n  two\tlines  \n", encoding="utf-8")
    assert text.read_words(path) == ["Hello,", "wörld", "two", "lines"]


def test_a_missing_word_list_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "DEFAULT_WORDS", tmp_path / "words")
    with pytest.raises(FileNotFoundError, match="install Debian's wamerican package") as info:
        text.read_words("words")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b" \n\t\n", "holds only whitespace"),
    (b"abc\0def", "is binary, not text \\(a NUL byte at offset 3\\)"),
    (b"caf\xe9 au lait", "is not UTF-8 text \\(byte 0xe9 at offset 3\\)"),
])
def test_bad_text_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        text.read_words(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_or_too_large_file(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="text file not found"):
        text.read_words(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        text.read_words(tmp_path)
    path = tmp_path / "big.txt"
    path.write_text("word " * 100)
    monkeypatch.setattr(text, "MAX_TEXT_BYTES", 100)
    with pytest.raises(ValueError, match="holds 500 bytes, more than"):
        text.read_words(path)


# ---------------------------------------------------------------------- vocabulary
def test_vocabulary_ids_and_round_trip(abc):
    assert len(abc) == 27 and abc.index["a"] == 1 and abc.index["z"] == 26
    assert abc.encode("emma").tolist() == [5, 13, 13, 1]
    assert abc.decode([5, 13, 13, 1, 0, 7]) == "emma"  # stops at the end token
    assert Vocabulary.from_words(["ba", "ab", "c"]) == Vocabulary("abc")


def test_vocabulary_errors(abc):
    with pytest.raises(ValueError, match="character 'é' \\(position 3\\) is not in the model's "
                       "vocabulary \\(27 tokens"):
        abc.encode("café")
    with pytest.raises(ValueError, match="listed twice"):
        Vocabulary("aba")
    with pytest.raises(ValueError, match="one non-whitespace character"):
        Vocabulary(["a", " "])
    with pytest.raises(ValueError, match="at least one character"):
        Vocabulary("")


# ---------------------------------------------------------------------- split
def test_split_is_seeded_disjoint_and_complete():
    words = [f"w{i}" for i in range(1000)] + ["w1", "w2"]  # duplicates are dropped
    train, val, test = text.split_words(words, seed=3)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert sorted(train + val + test) == sorted(set(words))
    assert not (set(train) & set(val) or set(val) & set(test) or set(train) & set(test))
    assert text.split_words(words, seed=3) == (train, val, test)
    assert text.split_words(words, seed=4)[0] != train


def test_split_refuses_too_few_words_and_bad_fractions():
    with pytest.raises(ValueError, match="leave the validation split empty"):
        text.split_words(["a", "b", "c"])
    with pytest.raises(ValueError, match="summing to 1"):
        text.split_words(["a"] * 20, fractions=(0.5, 0.1, 0.1))


# ---------------------------------------------------------------------- examples
def test_context_examples_by_hand(abc):
    x, y = text.context_examples(["emma", "bo"], abc, 3)
    windows = ["...", "..e", ".em", "emm", "mma", "...", "..b", ".bo"]
    assert x.tolist() == [ids(abc, w) for w in windows]
    assert y.tolist() == ids(abc, "emma.bo.")
    assert x.dtype == y.dtype == np.int64


def test_sequence_examples_by_hand(abc):
    x, y = text.sequence_examples(["emma", "bo"], abc, 6)
    P = IGNORE_INDEX
    assert x.tolist() == [ids(abc, ".emma."), ids(abc, ".bo...")]
    assert y.tolist() == [ids(abc, "emma.") + [P], ids(abc, "bo.") + [P, P, P]]


def test_a_word_longer_than_the_context_continues_in_the_next_row(abc):
    x, y = text.sequence_examples(["abcdefghij"], abc, 4)  # 11 targets: 3 rows of 4
    P = IGNORE_INDEX
    assert x.tolist() == [ids(abc, ".abc"), ids(abc, "defg"), ids(abc, "hij.")]
    assert y.tolist() == [ids(abc, "abcd"), ids(abc, "efgh"), ids(abc, "ij.") + [P]]


def test_both_kinds_predict_the_same_targets(abc):
    words = text.split_words(text.read_words("words"), seed=0)[1][:500]
    _, y_window = text.context_examples(words, abc, 5)
    _, y_seq = text.sequence_examples(words, abc, 8)
    kept = y_seq[y_seq != IGNORE_INDEX]
    assert len(y_window) == len(kept) == sum(len(w) + 1 for w in words)
    assert np.array_equal(np.sort(y_window), np.sort(kept))


def test_example_errors(abc):
    with pytest.raises(ValueError, match="context must be a positive integer, got 0"):
        text.context_examples(["ab"], abc, 0)
    with pytest.raises(ValueError, match="expected at least one word"):
        text.sequence_examples([], abc, 4)
    with pytest.raises(ValueError, match="character 'A'"):
        text.sequence_examples(["Ab"], abc, 4)
