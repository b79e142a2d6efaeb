"""chainrule.sklearn: scikit-learn's own estimator checks, Pipelines, cross-validation,
GridSearchCV on two processes, any label values, partial_fit, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from chainrule.sklearn import NeuralNetClassifier, NeuralNetRegressor

SMALL = dict(hidden=(32,), epochs=30, batch_size=32, lr=1e-2, random_state=0)


# Every check of the installed scikit-learn passes (none is listed as an expected failure).
@parametrize_with_checks([NeuralNetClassifier(**SMALL), NeuralNetRegressor(**SMALL)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600]


def test_pipeline_cross_val_score_and_grid_search_on_two_processes(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), NeuralNetClassifier(hidden=(32,), epochs=10,
                                                               batch_size=32, lr=1e-2,
                                                               random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.75
    grid = GridSearchCV(pipe, {"neuralnetclassifier__lr": [3e-3, 1e-2]}, cv=3, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["neuralnetclassifier__lr"] in (3e-3, 1e-2)
    assert grid.best_score_ > 0.8
    # The two processes computed what this one computes: the same seeds, the same scores.
    serial = GridSearchCV(pipe, {"neuralnetclassifier__lr": [3e-3, 1e-2]}, cv=3, n_jobs=1)
    serial.fit(X, y)
    assert np.array_equal(serial.cv_results_["mean_test_score"],
                          grid.cv_results_["mean_test_score"])


def test_any_label_values_and_probabilities(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    clf = NeuralNetClassifier(**SMALL).fit(X / 16, names[y])
    assert list(clf.classes_) == sorted(names)
    assert set(clf.predict(X[:50] / 16)) <= set(names)
    proba = clf.predict_proba(X[:50] / 16)
    assert proba.shape == (50, 10) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X[:50] / 16))
    assert clf.score(X / 16, names[y]) > 0.9
    odd = NeuralNetClassifier(**SMALL).fit(X / 16, np.where(y < 5, -1, 7))
    assert list(odd.classes_) == [-1, 7]


def test_same_seed_same_network_and_params_round_trip(digits):
    X, y = digits
    a = NeuralNetClassifier(**SMALL).fit(X, y)
    b = clone(a).fit(X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.get_params()["hidden"] == (32,)
    a.set_params(lr=0.5, dropout=0.1)
    assert a.lr == 0.5 and a.dropout == 0.1
    with pytest.raises(ValueError, match="dropout must be a number in"):
        NeuralNetClassifier(dropout=1.5).fit(X, y)
    with pytest.raises(ValueError, match="hidden must be a tuple"):
        NeuralNetClassifier(hidden=(0,)).fit(X, y)


def test_pickled_estimator_predicts_the_same_and_keeps_training(digits):
    X, y = digits
    clf = NeuralNetClassifier(**SMALL).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    copy.partial_fit(X, y)
    assert np.array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_partial_fit(digits):
    X, y = digits
    clf = NeuralNetClassifier(**SMALL)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    for _ in range(3):
        clf.partial_fit(X[:300], y[:300], classes=np.arange(10))
    assert len(clf.loss_curve_) == 3 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match=r"labels \[11\] that are not in classes"):
        clf.partial_fit(X[:3], [1, 2, 11])
    reg = NeuralNetRegressor(**SMALL)
    Xr, yr = make_regression(200, 4, random_state=0)
    reg.partial_fit(Xr, yr / yr.std())
    reg.partial_fit(Xr, yr / yr.std())
    assert reg.predict(Xr).shape == (200,)


def test_regressor_one_and_several_outputs():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (400, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    reg = NeuralNetRegressor(hidden=(64,), epochs=60, batch_size=32, lr=1e-2, random_state=0)
    assert reg.fit(X, y).score(X, y) > 0.95
    Y = np.stack([y, X[:, 0] * X[:, 1]], axis=1)
    two = clone(reg).fit(X, Y)
    assert two.predict(X).shape == (400, 2) and two.score(X, Y) > 0.9
