"""Metrics against scikit-learn on random labels, plus count_correct and error messages."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from chainrule import metrics

SEEDS = (0, 1, 2)
# (seed, C, missing): with missing=True some classes are absent from y_pred or y_true.
CASES = [(seed, c, missing) for seed in SEEDS for c, missing in ((2, False), (2, True), (10, True))]


def make_labels(seed, c, missing=True, n=200):
    """Random labels whose predictions are right about 60 % of the time.

    With ``missing``, y_pred never predicts the last class, so its precision divides by
    zero; for C > 2 y_true also lacks class 1 (predicted 3 times, all wrongly), so its
    recall divides by zero. For C = 2 this makes y_pred constant 0.
    """
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, size=n)
    if missing and c > 2:
        y_true[y_true == 1] = 0
    noise = rng.integers(0, c, size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, noise)
    if missing:
        y_pred[y_pred == c - 1] = 0
        if c > 2:
            y_pred[:3] = 1
    return y_true, y_pred


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("seed", "c", "missing"), CASES)
def test_accuracy_matches_sklearn(seed, c, missing):
    y_true, y_pred = make_labels(seed, c, missing)
    ours = metrics.accuracy(y_true, y_pred)
    assert isinstance(ours, float)
    assert ours == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-15)
    assert 0.3 < ours < 1.0  # the fixture is neither trivial nor degenerate


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("tied", [False, True])
def test_top_k_accuracy_matches_sklearn(seed, k, tied):
    rng = np.random.default_rng(seed)
    n, c = 300, 10
    y_true = rng.integers(0, c, size=n)
    # Integer scores from a small range make ties common, testing the tie-breaking rule.
    scores = rng.integers(0, 3, size=(n, c)).astype(np.float64) if tied else rng.normal(size=(n, c))
    expected = skm.top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(c))
    assert metrics.top_k_accuracy(y_true, scores, k=k) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_accuracy_binary_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, size=150)
    p = rng.random(150)
    expected = skm.top_k_accuracy_score(y_true, p, k=1)
    ours = metrics.top_k_accuracy(y_true, np.stack([1 - p, p], axis=1), k=1)
    assert ours == pytest.approx(expected, abs=1e-15)


def test_top_k_accuracy_ties_favour_larger_class_index_and_large_k():
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert metrics.top_k_accuracy([0, 1, 2], scores, k=1) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy([0], scores[:1], k=1) == 0.0
    assert metrics.top_k_accuracy([0, 1, 1], scores, k=2) == 1.0
    assert metrics.top_k_accuracy([2, 2, 0], scores, k=3) == 1.0
    assert metrics.top_k_accuracy([2, 2, 0], scores, k=50) == 1.0


@pytest.mark.parametrize(("seed", "c", "missing"), CASES)
def test_confusion_matrix_matches_sklearn(seed, c, missing):
    y_true, y_pred = make_labels(seed, c, missing)
    ours = metrics.confusion_matrix(y_true, y_pred)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, skm.confusion_matrix(y_true, y_pred, labels=np.arange(c)))


def test_confusion_matrix_num_classes_pads_and_orients_rows_as_truth():
    cm = metrics.confusion_matrix([0, 0, 1], [1, 1, 1], num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 1] = 2
    expected[1, 1] = 1
    np.testing.assert_array_equal(cm, expected)


@pytest.mark.parametrize(("seed", "c", "missing"), CASES)
@pytest.mark.parametrize("average", [None, "macro", "micro", "weighted"])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
def test_precision_recall_f1_matches_sklearn(seed, c, missing, average, zero_division):
    y_true, y_pred = make_labels(seed, c, missing)
    p, r, f, s = metrics.precision_recall_f1(
        y_true, y_pred, average=average, zero_division=zero_division
    )
    ep, er, ef, es = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(c), average=average, zero_division=zero_division
    )
    np.testing.assert_allclose([p, r, f], [ep, er, ef], rtol=1e-12, atol=0, equal_nan=True)
    if average is None:
        assert p.shape == (c,) and s.dtype == np.int64
        np.testing.assert_array_equal(s, es)
        # The fixture really has undefined ratios: precision of C-1, recall of class 1.
        undefined = [p[c - 1], r[1]] if c > 2 else [p[c - 1]] if missing else []
        np.testing.assert_array_equal(undefined, zero_division)
    else:
        assert all(isinstance(v, float) for v in (p, r, f))
        assert s == len(y_true)


@pytest.mark.parametrize(("seed", "c", "missing"), CASES)
@pytest.mark.parametrize("average", [None, "macro", "micro", "weighted"])
def test_precision_recall_f1_shortcuts_match_sklearn(seed, c, missing, average):
    y_true, y_pred = make_labels(seed, c, missing)
    kwargs = {"labels": np.arange(c), "average": average, "zero_division": 0.0}
    pairs = [
        (metrics.precision, skm.precision_score),
        (metrics.recall, skm.recall_score),
        (metrics.f1_score, skm.f1_score),
    ]
    for ours, theirs in pairs:
        expected = theirs(y_true, y_pred, **kwargs)
        np.testing.assert_allclose(ours(y_true, y_pred, average=average), expected, rtol=1e-12)


def test_shortcuts_default_to_macro():
    y_true, y_pred = make_labels(0, 10)
    expected = skm.f1_score(y_true, y_pred, labels=np.arange(10), average="macro", zero_division=0)
    assert metrics.f1_score(y_true, y_pred) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
def test_num_classes_includes_classes_absent_from_both(zero_division):
    """Class 2 is neither true nor predicted: precision, recall and F1 all divide by 0."""
    y_true, y_pred = [0, 1, 1], [0, 1, 0]
    p, r, f, s = metrics.precision_recall_f1(
        y_true, y_pred, num_classes=3, zero_division=zero_division
    )
    ep, er, ef, es = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2], zero_division=zero_division
    )
    np.testing.assert_allclose(np.stack([p, r, f]), np.stack([ep, er, ef]), equal_nan=True)
    np.testing.assert_array_equal([p[2], r[2], f[2]], zero_division)
    np.testing.assert_array_equal(s, [1, 2, 0])
    macro = metrics.precision(y_true, y_pred, num_classes=3, zero_division=zero_division)
    expected = (0.5 + 1.0) / 2 if math.isnan(zero_division) else (1.5 + zero_division) / 3
    assert macro == pytest.approx(expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [2, 10])
def test_log_loss_matches_sklearn(seed, c):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, size=120)
    probs = softmax(rng.normal(scale=2.0, size=(120, c)))
    expected = skm.log_loss(y_true, probs, labels=np.arange(c))
    assert metrics.log_loss(y_true, probs) == pytest.approx(expected, rel=1e-12)


def test_log_loss_clips_zero_probabilities_like_sklearn():
    y_true = np.array([0, 1, 2, 1])
    probs = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    eps = float(np.finfo(np.float64).eps)
    expected = skm.log_loss(y_true, probs, labels=[0, 1, 2])
    assert metrics.log_loss(y_true, probs, eps=eps) == pytest.approx(expected, rel=1e-12)
    default = -(math.log(1 - 1e-15) * 2 + math.log(1e-15) + math.log(0.5)) / 4
    assert metrics.log_loss(y_true, probs) == pytest.approx(default, rel=1e-12)


def test_log_loss_clips_certain_probabilities_below_one():
    y_true = np.array([0, 2, 1])
    one_hot = np.eye(3)[y_true]
    assert metrics.log_loss(y_true, one_hot) == pytest.approx(
        -math.log(1.0 - 1e-15), rel=1e-9, abs=0
    )
    eps = float(np.finfo(np.float64).eps)
    expected = skm.log_loss(y_true, one_hot, labels=[0, 1, 2])
    assert expected > 0
    assert metrics.log_loss(y_true, one_hot, eps=eps) == pytest.approx(expected, rel=1e-6, abs=0)


def test_log_loss_accepts_float32_probs():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 10, size=64)
    probs = softmax(rng.normal(size=(64, 10))).astype(np.float32)
    probs64 = probs.astype(np.float64)
    probs64 /= probs64.sum(axis=1, keepdims=True)
    expected = skm.log_loss(y_true, probs64, labels=np.arange(10))
    assert metrics.log_loss(y_true, probs) == pytest.approx(expected, rel=1e-6)


def parse_report(text):
    """Parse a classification_report text table into sklearn's output_dict layout."""
    out = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        tokens = line.split()
        if tokens[0] == "accuracy":
            out["accuracy"] = float(tokens[1])
            out["accuracy support"] = int(tokens[2])
            continue
        name = " ".join(tokens[:-4])
        p, r, f, s = tokens[-4:]
        out[name] = {
            "precision": float(p),
            "recall": float(r),
            "f1-score": float(f),
            "support": int(s),
        }
    return out


@pytest.mark.parametrize(("seed", "c", "missing"), CASES)
@pytest.mark.parametrize("named", [False, True])
def test_classification_report_matches_sklearn(seed, c, missing, named):
    y_true, y_pred = make_labels(seed, c, missing)
    names = [f"class {i}" for i in range(c)] if named else None
    digits = 6
    text = metrics.classification_report(y_true, y_pred, target_names=names, digits=digits)
    expected = skm.classification_report(
        y_true,
        y_pred,
        labels=np.arange(c),
        target_names=names,
        output_dict=True,
        zero_division=0.0,
    )
    ours = parse_report(text)
    assert text.split()[:4] == ["precision", "recall", "f1-score", "support"]
    assert set(ours) == set(expected) | {"accuracy support"}
    assert ours["accuracy"] == pytest.approx(expected["accuracy"], abs=10**-digits)
    assert ours["accuracy support"] == len(y_true)
    for name, row in expected.items():
        if name == "accuracy":
            continue
        for key in ("precision", "recall", "f1-score"):
            assert ours[name][key] == pytest.approx(row[key], abs=0.51 * 10**-digits), (name, key)
        assert ours[name]["support"] == row["support"]


def test_classification_report_layout_matches_sklearn_text():
    y_true = np.array([0, 1, 2, 2, 2, 1, 0, 0])
    y_pred = np.array([0, 0, 2, 2, 1, 1, 0, 2])
    names = ["cat", "dog", "bird"]
    ours = metrics.classification_report(y_true, y_pred, target_names=names, digits=3)
    assert ours == skm.classification_report(y_true, y_pred, target_names=names, digits=3)


# --------------------------------------------------------------------------- count_correct


@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    n, c = 128, 10
    scores = rng.normal(size=(n, c)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    # Make about half the predictions right so a wrong comparison cannot pass by luck.
    right = rng.random(n) < 0.5
    labels[right] = scores[right].argmax(axis=1)
    return scores, labels


def test_count_correct_integer_labels(batch):
    scores, labels = batch
    expected = int(round(skm.accuracy_score(labels, scores.argmax(axis=1)) * len(labels)))
    assert 20 < expected < 108
    got = metrics.count_correct(scores, labels)
    assert type(got) is int and got == expected
    assert metrics.count_correct(scores, labels[:, None]) == expected
    assert metrics.count_correct(scores, labels.astype(np.uint8)) == expected


def test_count_correct_one_hot_and_soft_targets(batch):
    scores, labels = batch
    expected = metrics.count_correct(scores, labels)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    assert metrics.count_correct(scores, one_hot) == expected
    smoothed = one_hot * 0.9 + 0.01
    assert metrics.count_correct(scores, smoothed) == expected
    assert metrics.count_correct(softmax(scores), one_hot) == expected


@pytest.mark.parametrize("out_shape", ["(N,)", "(N,1)"])
@pytest.mark.parametrize("target_kind", ["int", "bool", "float", "smoothed", "int (N,1)"])
def test_count_correct_binary(out_shape, target_kind):
    rng = np.random.default_rng(11)
    probs = rng.random(100).astype(np.float32)
    y = rng.integers(0, 2, size=100)
    expected = int(np.count_nonzero((probs > 0.5).astype(int) == y))
    assert 30 < expected < 70
    output = probs if out_shape == "(N,)" else probs[:, None]
    target = {
        "int": y,
        "bool": y.astype(bool),
        "float": y.astype(np.float32),
        "smoothed": y * 0.8 + 0.1,  # label smoothing: positive when > 0.5
        "int (N,1)": y[:, None],
    }[target_kind]
    assert metrics.count_correct(output, target) == expected


def test_count_correct_binary_threshold_for_logits():
    logits = np.array([-2.0, -0.1, 0.3, 4.0])
    y = np.array([0, 1, 1, 1])
    assert metrics.count_correct(logits, y, threshold=0.0) == 3
    assert metrics.count_correct(logits, y) == 2  # default 0.5 misreads logit 0.3


def test_count_correct_two_column_output_uses_argmax():
    output = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    assert metrics.count_correct(output, np.array([0, 0, 1])) == 2


@pytest.mark.parametrize(
    ("output_shape", "target", "match"),
    [
        (
            (128, 10),
            np.zeros(127, dtype=int),
            r"expected target of shape \(128,\).*received.*\(127,\)",
        ),
        (
            (128, 10),
            np.zeros((128, 9)),
            r"\(128, 10\) one-hot, received target of shape \(128, 9\)",
        ),
        ((128, 10), np.zeros(128), r"expected integer class labels.*float64.*astype"),
        ((128,), np.zeros(64), r"expected binary target of shape \(128,\) or \(128, 1\)"),
        ((128, 1), np.zeros((128, 2)), r"received target of shape \(128, 2\)"),
        ((4, 3, 2), np.zeros(4, dtype=int), r"expected output of shape \(N, C\).*\(4, 3, 2\)"),
    ],
)
def test_count_correct_shape_errors(output_shape, target, match):
    with pytest.raises(ValueError, match=match):
        metrics.count_correct(np.zeros(output_shape), target)


def test_get_metric():
    metric = metrics.get_metric("accuracy")
    assert metric.name == "accuracy"
    assert metrics.get_metric("acc").name == "accuracy"
    assert metrics.get_metric("ACC").name == "accuracy"
    assert metrics.get_metric(metric) is metric
    output = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert metric.count(output, np.array([1, 1])) == 1
    assert metric.count(np.array([0.7, 0.2]), np.array([1, 1]), 0.1) == 2
    with pytest.raises(ValueError, match=r"Unknown metric 'f1'; known metrics: 'acc', 'accuracy'"):
        metrics.get_metric("f1")
    with pytest.raises(ValueError, match="Unknown metric None"):
        metrics.get_metric(None)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: metrics.accuracy(np.zeros(100, int), np.zeros(99, int)),
            "y_true has 100 entries, y_pred has 99",
        ),
        (
            lambda: metrics.confusion_matrix([0, 1.5], [0, 1]),
            r"y_true must hold integer class labels, found 1.5",
        ),
        (lambda: metrics.accuracy(["a", "b"], [0, 1]), "y_true must hold integer class labels"),
        (lambda: metrics.f1_score([0, 1], [0, -1]), "y_pred contains negative label -1"),
        (lambda: metrics.accuracy([], []), "y_true is empty"),
        (
            lambda: metrics.accuracy(np.zeros((4, 3)), np.zeros(4)),
            r"y_true must be 1-D.*\(4, 3\).*argmax",
        ),
        (
            lambda: metrics.confusion_matrix([0, 5], [0, 1], num_classes=5),
            r"y_true contains label 5 but num_classes=5 \(labels 0..4\)",
        ),
        (lambda: metrics.precision_recall_f1([0], [0], average="binary"), "average must be one of"),
        (lambda: metrics.precision_recall_f1([0], [0], zero_division=2), "zero_division"),
        (
            lambda: metrics.log_loss([0, 7], np.full((2, 5), 0.2)),
            r"y_true contains label 7 but probs has 5 columns",
        ),
        (
            lambda: metrics.log_loss([0, 1, 2], np.full((2, 5), 0.2)),
            "y_true has 3 entries, probs has 2 rows",
        ),
        (lambda: metrics.log_loss([0, 1], np.array([0.2, 0.9])), r"probs must have shape \(N, C\)"),
        (
            lambda: metrics.log_loss([0, 1], np.array([[2.0, -1.0], [0.5, 0.5]])),
            r"probs must lie in \[0, 1\]",
        ),
        (lambda: metrics.log_loss([0, 1], np.array([[0.5, 0.4], [0.5, 0.5]])), "row 0 sums to 0.9"),
        (
            lambda: metrics.top_k_accuracy([0, 1], np.zeros((3, 4))),
            "y_true has 2 entries, scores has 3 rows",
        ),
        (lambda: metrics.top_k_accuracy([0, 1], np.zeros((2, 4)), k=0), "k must be a positive int"),
        (
            lambda: metrics.top_k_accuracy([0, 1], np.array([[0.0, np.nan], [1.0, 0.0]])),
            "NaN or inf",
        ),
        (
            lambda: metrics.classification_report([0, 3], [0, 1], target_names=["a", "b"]),
            "y_true contains label 3 but num_classes=2",
        ),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_whole_float_and_bool_labels_are_accepted():
    assert metrics.accuracy(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert metrics.accuracy(np.array([True, False]), np.array([1, 1])) == 0.5
