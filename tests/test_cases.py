"""One harness for the table in cases.py: every row of every layer and loss through every check
that applies to it.

Each check below is one test function, parametrized over the rows it applies to (and the dtypes
and seeds it runs in); CHECKS names them all. For every layer row: float64 gradcheck, equality
with torch in float32 and float64 (forward, dL/dx, every parameter gradient, running
statistics), dtype kept (shapes too), no float64 anywhere in a float32 forward/backward (the
Spy), nothing cached at inference, backward never changes a parameter, gradients assigned
(not accumulated), need_input_grad=False, grad_y's shape and dtype checked, a second backward
refused, config round trip; random layers replay their draw. For every loss row: gradcheck,
torch, dtype, Spy, arguments left alone, config round trip. Inference rows (BatchNorm in eval
mode) take the forward-only checks.

Adding a layer is adding a row to cases.CASES; the tests at the end add a toy row and show it
gets every check, and that a planted wrong backward fails them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import chainrule as cr
from cases import CASES, Case, make, normal
from chainrule import layers, losses
from chainrule.layers import Layer
from chainrule.layers.base import layer_spec, make_layer
from helpers import (
    Spy,
    all_layers,
    assert_close,
    assert_close_to_scale,
    backward_unchecked,
    call_unchecked,
    float_arrays,
    generators,
    loss_unchecked,
    rtol_for,
    spy_on,
    spying,
    to_torch,
)
from torch_refs import TorchRef, elementwise

COMPARE = {"entry": assert_close, "scale": assert_close_to_scale}

# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Check:
    """A check: its test function, the rows it applies to, and the (dtype, seed) runs per row."""

    name: str
    run: Callable[[Case, type, int], None]
    applies: Callable[[Case], bool]
    dtypes: Callable[[Case], tuple]
    seeds: Callable[[Case], tuple]
    pending: str | None = None

    def runs(self, table) -> list[tuple[Case, type, int]]:
        return [(case, dtype, seed) for case in table if self.applies(case)
                for dtype in self.dtypes(case) for seed in self.seeds(case)]


CHECKS: dict[str, Check] = {}
#: (check, row id, dtype, seed) of every check run that reached its end.
RAN: list[tuple[str, str, str, int]] = []


def check(applies, dtypes, seeds=lambda case: (1,), pending=None):
    """Register the decorated test function as a check and parametrize it over the table."""
    def register(fn):
        name = fn.__name__.removeprefix("test_")

        @functools.wraps(fn)
        def run(case, dtype, seed):
            __tracebackhide__ = True  # a failure's traceback starts in the check itself
            fn(case, dtype, seed)
            RAN.append((name, case.id, np.dtype(dtype).name, seed))

        spec = Check(name, run, applies, dtypes, seeds, pending)
        CHECKS[name] = spec
        params = [pytest.param(case, dtype, seed,
                               id=f"{case.id}-{np.dtype(dtype).name}-seed{seed}")
                  for case, dtype, seed in spec.runs(CASES)]
        test = pytest.mark.parametrize(("case", "dtype", "seed"), params)(run)
        if pending:
            test = pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                                     reason=pending)(test)
        return test
    return register


def layer_rows(case):
    return case.kind == "layer"


def training_rows(case):
    return case.kind == "layer" and case.training


def loss_rows(case):
    return case.kind == "loss"


def any_row(case):
    return True


def float32(case):
    return (np.float32,)


def float64(case):
    return (np.float64,)


# ---------------------------------------------------------------------- small tools
def is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def snapshot(layer):
    return ([p.value.copy() for p in layer.parameters()],
            {name: value.copy() for name, value in layer.buffers().items()})


def assert_unchanged(layer, before, what: str) -> None:
    values, buffers = before
    for p, value in zip(layer.parameters(), values, strict=True):
        np.testing.assert_array_equal(p.value, value, err_msg=f"{what} changed {p.name}")
    for name, value in layer.buffers().items():
        np.testing.assert_array_equal(value, buffers[name], err_msg=f"{what} changed {name}")


def save_states(layer):
    gens = generators(layer)
    states = [g.bit_generator.state for g in gens]

    def restore():
        for g, s in zip(gens, states, strict=True):
            g.bit_generator.state = s

    return gens, restore


def upstream(y, seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).standard_normal(y.shape).astype(y.dtype)


# ---------------------------------------------------------------------- gradients
@check(lambda case: training_rows(case) or loss_rows(case), float64,
       lambda case: case.grad_seeds)
def test_gradcheck_float64(case, dtype, seed):
    subject, data = make(case, dtype, seed)
    if case.kind == "loss":
        pred, target = data
        report = cr.gradcheck(subject, pred, target, seed=seed)
        entry = report["pred"]
        assert entry.checked == pred.size and entry.kinks == 0, str(report)
    else:
        x = data
        before = snapshot(subject)
        report = cr.gradcheck(subject, x, seed=seed, max_entries=case.max_entries)
        expected = (["input"] if is_float(x) else []) + [p.name for p in subject.parameters()]
        assert [e.name for e in report.entries] == expected
        # The inputs are chosen away from every kink, so every checked entry is compared.
        assert all(e.checked > 0 and e.kinks == 0 for e in report.entries), str(report)
        # gradcheck works on a float64 clone: the layer and its running statistics stay.
        assert_unchanged(subject, before, "gradcheck")
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6, str(report)


@check(any_row, lambda case: case.torch_dtypes, lambda case: case.seeds)
def test_matches_torch(case, dtype, seed):
    subject, data = make(case, dtype, seed)
    rtol = rtol_for(dtype)
    label = f"{case.id} {np.dtype(dtype)}"
    if case.kind == "loss":
        pred, target = data
        value = subject(pred, target)
        grad = subject.backward()
        pred_t = to_torch(pred, requires_grad=True)
        value_t = case.torch_ref(subject, pred_t, to_torch(target))
        value_t.backward()
        assert isinstance(value, float)
        assert_close(value, value_t.item(), rtol, f"{label} value")
        assert grad.dtype == dtype and grad.shape == pred.shape
        COMPARE[case.grad_tol](grad, pred_t.grad, rtol, f"{label} dL/dpred")
        if getattr(subject, "ignore_index", None) is not None:
            assert np.all(grad[target == subject.ignore_index] == 0.0)
        return

    layer, x = subject, data
    ref: TorchRef = case.torch_ref(layer)  # before our forward: the forward-time state
    x_t = to_torch(x, requires_grad=is_float(x) and case.training)
    y = layer.forward(x, training=case.training)
    assert y.dtype == dtype
    y_t = ref.forward(x_t)  # after it: a random layer's reference replays our draw
    COMPARE[case.forward_tol](y, y_t, rtol, f"{label} forward y")
    theirs = ref.buffers()
    assert sorted(theirs) == sorted(layer.buffers())
    for name, value_t in theirs.items():
        assert_close(layer.buffers()[name], value_t, rtol, f"{label} {name}",
                     atol=rtol * ref.buffer_atol.get(name, 0.0))
    if not case.training:
        return
    g = upstream(y, seed)
    grad_x = layer.backward(g)
    y_t.backward(to_torch(g))
    if is_float(x):
        COMPARE[case.grad_tol](grad_x, x_t.grad, rtol, f"{label} grad_x")
    else:
        assert grad_x is None
    grads = ref.grads()
    assert sorted(grads) == sorted(p.name for p in layer.parameters())
    for p in layer.parameters():
        COMPARE[case.grad_tol](p.grad, grads[p.name], rtol, f"{label} {p.name}.grad")


# ---------------------------------------------------------------------- dtype
def assert_kept(layer, x, dtype, y, grad_x, y_eval) -> None:
    """Outputs, dL/dx, parameters, their gradients and buffers all in ``dtype``, with their
    shapes, and C-contiguous (as the next layer's GEMM wants them)."""
    n = x.shape[0]
    assert layer.output_shape == layer.compute_output_shape(layer.input_shape)
    for out in [y_eval] if y is None else [y, y_eval]:
        assert out.dtype == dtype and out.shape == (n, *layer.output_shape), (out.dtype, out.shape)
        assert out.flags.c_contiguous
    if y is not None:
        if is_float(x):
            assert grad_x.dtype == dtype and grad_x.shape == x.shape and grad_x.flags.c_contiguous
        else:
            assert grad_x is None
        for p in layer.parameters():
            assert p.grad.dtype == dtype and p.grad.shape == p.shape and p.grad.flags.c_contiguous
    for p in layer.parameters():
        assert p.value.dtype == dtype, p.name
    for name, value in layer.buffers().items():
        assert value.dtype == dtype, name


@check(any_row, float64)
def test_dtype_kept(case, dtype, seed):
    """A float64 layer or loss computes in float64 (float32: test_float32_spy, op by op)."""
    subject, data = make(case, dtype, seed)
    if case.kind == "loss":
        pred, target = data
        assert isinstance(subject(pred, target), float)
        grad = subject.backward()
        assert grad.dtype == dtype and grad.shape == pred.shape
        return
    layer, x = subject, data
    y = grad_x = None
    if case.training:
        y = layer.forward(x, training=True)
        grad_x = layer.backward(np.ones_like(y))
    assert_kept(layer, x, dtype, y, grad_x, layer.forward(x, training=False))


@check(any_row, float32)
def test_float32_spy(case, dtype, seed):
    """float32 kept: no NumPy operation inside forward (training and inference) and backward
    sees or makes a float64 (the input, every parameter and buffer are Spy views that log each
    one), and every output, cache, gradient and buffer is float32."""
    subject, data = make(case, dtype, seed)
    if case.kind == "loss":
        pred, target = data
        with spying() as log:
            value, grad = loss_unchecked(subject, pred.view(Spy), target)
            found = list(log)
        assert found == [], f"float64 inside {case.id}: {sorted(set(found))}"
        assert isinstance(value, float)
        assert grad.dtype == np.float32 and grad.shape == pred.shape
        return
    layer, x = subject, data
    spy_on(layer)
    y = grad_x = None
    caches = []
    with spying() as log:
        if case.training:
            y = call_unchecked(layer, x.view(Spy), training=True)
            caches = [a for sub in all_layers(layer) for a in float_arrays(sub.cache)]
            grad_x = backward_unchecked(layer, np.ones_like(y))
        y_eval = call_unchecked(layer, x.view(Spy), training=False)
        found = list(log)
    assert found == [], f"float64 inside {case.id}: {sorted(set(found))}"
    assert [a.dtype for a in caches if a.dtype != np.float32] == []
    assert_kept(layer, x, np.float32, y, grad_x, y_eval)


# ---------------------------------------------------------------------- the cache
@check(layer_rows, float32)
def test_nothing_cached_at_inference(case, dtype, seed):
    layer, x = make(case, dtype, seed)
    before = snapshot(layer)
    layer.forward(x, training=False)
    assert all(sub.cache is None for sub in all_layers(layer))
    assert_unchanged(layer, before, "an inference forward")
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a preceding forward"):
        layer.backward(np.ones((x.shape[0], *layer.output_shape), dtype))
    if case.training:
        # An inference forward after a training one drops the training cache too.
        y = layer.forward(x, training=True)
        layer.forward(x, training=False)
        assert all(sub.cache is None for sub in all_layers(layer))
        with pytest.raises(RuntimeError, match="training=True"):
            layer.backward(np.ones_like(y))


@check(training_rows, float64, lambda case: (2,))
def test_backward_never_changes_parameters(case, dtype, seed):
    """Backward changes no parameter value, no buffer and not grad_y."""
    layer, x = make(case, dtype, seed)
    y = layer.forward(x, training=True)
    after_forward = snapshot(layer)  # a training forward may update buffers (BatchNorm)
    g = upstream(y, seed)
    g_before = g.copy()
    layer.backward(g)
    assert_unchanged(layer, after_forward, "backward")
    np.testing.assert_array_equal(g, g_before, err_msg="backward changed grad_y")


def step(layer, x, g, restore, need_input_grad=True):
    """A training forward from the saved random state (the same draw), then backward: dL/dx
    (a copy) and each parameter's gradient (copies)."""
    restore()
    layer.forward(x, training=True)
    grad_x = layer.backward(g, need_input_grad=need_input_grad)
    return (None if grad_x is None else grad_x.copy()), [p.grad.copy() for p in layer.parameters()]


@check(training_rows, float64, lambda case: (2,))
def test_gradients_assigned_not_accumulated(case, dtype, seed):
    """Backward assigns each gradient: a second step on the same batch (and the same draw)
    gives the same gradients, bit for bit, not twice them."""
    layer, x = make(case, dtype, seed)
    _, restore = save_states(layer)
    g = upstream(layer.forward(x, training=True), seed)
    grad_x, grads = step(layer, x, g, restore)
    again, grads_again = step(layer, x, g, restore)
    if grad_x is None:
        assert again is None
    else:
        np.testing.assert_array_equal(again, grad_x, err_msg="a second step's grad_x differs")
    for p, first, second in zip(layer.parameters(), grads, grads_again, strict=True):
        np.testing.assert_array_equal(second, first, err_msg=f"{p.name}.grad accumulated")


@check(training_rows, float64, lambda case: (2,))
def test_no_input_gradient_keeps_parameter_gradients(case, dtype, seed):
    """backward(g, need_input_grad=False) (a model's first layer in fit) returns None and
    assigns the same parameter gradients as a full backward."""
    layer, x = make(case, dtype, seed)
    _, restore = save_states(layer)
    g = upstream(layer.forward(x, training=True), seed)
    _, grads = step(layer, x, g, restore)
    grad_x, grads_without = step(layer, x, g, restore, need_input_grad=False)
    assert grad_x is None
    for p, full, without in zip(layer.parameters(), grads, grads_without, strict=True):
        np.testing.assert_array_equal(without, full, err_msg=f"{p.name}.grad without dL/dx")


@check(training_rows, float32)
def test_grad_y_shape_checked(case, dtype, seed):
    layer, x = make(case, dtype, seed)
    y = layer.forward(x, training=True)
    wrong = np.ones((y.shape[0] + 1, *y.shape[1:]), dtype)
    with pytest.raises(ValueError, match=re.escape(
            f"backward expected grad_y of shape {y.shape} (the output shape of the last "
            f"forward), got {wrong.shape}")):
        layer.backward(wrong)


@check(training_rows, float32)
def test_grad_y_dtype_checked(case, dtype, seed):
    layer, x = make(case, dtype, seed)
    y = layer.forward(x, training=True)
    with pytest.raises(TypeError, match="grad_y of dtype float32, got float64"):
        layer.backward(np.ones(y.shape))


@check(training_rows, float32)
def test_second_backward_refused(case, dtype, seed):
    """One training forward serves one backward: a second backward without a new forward is
    refused, as one without any forward is (STYLE.md's layer contract)."""
    layer, x = make(case, dtype, seed)
    y = layer.forward(x, training=True)
    layer.backward(np.ones_like(y))
    try:
        layer.backward(np.ones_like(y))
    except RuntimeError as error:
        assert re.search(r"backward\(\) needs a preceding forward\(x, training=True\)",
                         str(error)), str(error)
    else:
        # pytrace=False: the one-line message is the whole story (and, while this check is
        # pending, keeps each row's expected failure cheap to report).
        pytest.fail(f"{case.id}: a second backward after one training forward ran again; "
                    "expected RuntimeError('… backward() needs a preceding forward(x, "
                    "training=True) …')", pytrace=False)


@check(lambda case: training_rows(case) and case.random, float32)
def test_random_draws_replay(case, dtype, seed):
    """A random layer draws afresh at every training forward, from its own Generator(s): the
    same state replays the same draw (what gradcheck and the torch reference rely on)."""
    layer, x = make(case, dtype, seed)
    gens, restore = save_states(layer)
    assert gens, f"{case.id} is marked random but has no Generator"
    first = layer.forward(x, training=True)
    assert not np.array_equal(layer.forward(x, training=True), first)
    restore()
    np.testing.assert_array_equal(layer.forward(x, training=True), first)


# ---------------------------------------------------------------------- config
@check(any_row, float64)
def test_config_round_trip(case, dtype, seed):
    """from_config(get_config()) rebuilds the same layer or loss: the same config (JSON-able),
    repr, parameter names and shapes, and with the weights copied the same output."""
    subject, data = make(case, dtype, seed)
    config = subject.get_config()
    assert json.loads(json.dumps(config)) == config
    if case.kind == "loss":
        pred, target = data
        twin = losses.from_config(type(subject).__name__, config)
        assert type(twin) is type(subject) and twin.get_config() == config
        assert repr(twin) == repr(subject)
        assert twin(pred, target) == subject(pred, target)
        np.testing.assert_array_equal(twin.backward(), subject.backward())
        return
    layer, x = subject, data
    spec = layer_spec(layer)
    # A class defined outside chainrule (the toy row below) is rebuilt through custom_objects.
    custom = {type(layer).__name__: type(layer)} if "module" in spec else None
    twins = [type(layer).from_config(config), make_layer(spec, custom_objects=custom)]
    for twin in twins:
        assert type(twin) is type(layer) and twin.get_config() == config
        assert repr(twin) == repr(layer)
    twin = twins[0]
    twin.build(layer.input_shape, dtype=dtype)
    assert [(p.name, p.shape) for p in twin.parameters()] == [
        (p.name, p.shape) for p in layer.parameters()]
    for mine, theirs in zip(twin.parameters(), layer.parameters(), strict=True):
        mine.value[...] = theirs.value
    twin.set_buffers(layer.buffers())
    np.testing.assert_array_equal(twin.forward(x), layer.forward(x))


# ---------------------------------------------------------------------- losses
@check(loss_rows, float32)
def test_leaves_arguments_alone(case, dtype, seed):
    loss, (pred, target) = make(case, dtype, seed)
    pred_copy, target_copy = pred.copy(), target.copy()
    loss(pred, target)
    grad = loss.backward()
    np.testing.assert_array_equal(pred, pred_copy)
    np.testing.assert_array_equal(target, target_copy)
    assert not np.shares_memory(grad, pred)
    np.testing.assert_array_equal(loss.backward(), grad)


# ---------------------------------------------------------------------- the table itself
def test_every_layer_and_loss_class_has_a_row():
    """Every public layer and loss class has a training row (gradcheck and torch) in the table."""
    public = {getattr(layers, name) for name in layers.__all__}
    layer_classes = {c for c in public if isinstance(c, type) and issubclass(c, Layer)} - {Layer}
    loss_classes = set(losses.LOSS_CLASSES.classes())
    trained = {case.cls for case in CASES if case.kind == "loss" or case.training}
    assert layer_classes | loss_classes <= trained, sorted(
        c.__name__ for c in (layer_classes | loss_classes) - trained)
    for name in ("gradcheck_float64", "matches_torch"):
        covered = {case.cls for case, _, _ in CHECKS[name].runs(CASES)}
        assert layer_classes | loss_classes <= covered, name
    assert any(case.cls is layers.BatchNorm and not case.training for case in CASES)


def test_row_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})


# ---------------------------------------------------------------------- a new row
class Scale(Layer):
    """y = c·x, a user's layer defined here, outside chainrule.

    Backward: dL/dx = c·g.
    """

    def __init__(self, c: float = 2.0, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self.c = float(c)

    def _forward(self, x, training):
        return self.c * x

    def _backward(self, grad_y, need_input_grad):
        return self.c * grad_y if need_input_grad else None

    def get_config(self):
        return {**super().get_config(), "c": self.c}


class ScaleForgettingC(Scale):
    """The planted slip: dL/dx = g, the factor c forgotten."""

    def _backward(self, grad_y, need_input_grad):
        return grad_y if need_input_grad else None


torch_scale = elementwise(lambda layer, x: layer.c * x)
TOY = Case("toy_scale", lambda: Scale(3.0), normal(4, 5), torch_scale)
WRONG_TOY = Case("toy_scale_wrong_backward", lambda: ScaleForgettingC(3.0), normal(4, 5),
                 torch_scale)

#: The checks a plain (deterministic) layer row gets: all but the random layers' and losses'.
PLAIN_LAYER_CHECKS = [name for name, spec in CHECKS.items() if spec.applies(TOY)]


def test_a_plain_layer_row_gets_all_but_the_random_and_loss_checks():
    assert sorted(set(CHECKS) - set(PLAIN_LAYER_CHECKS)) == [
        "leaves_arguments_alone", "random_draws_replay"]


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                                               reason=CHECKS[name].pending)
                 if CHECKS[name].pending else ())
    for name in PLAIN_LAYER_CHECKS])
def test_a_new_row_gets_every_check(name):
    """Adding the toy row to the table selects it for every check, in every dtype and seed the
    check runs, and each of those runs passes to its end."""
    spec = CHECKS[name]
    runs = [run for run in spec.runs([*CASES, TOY]) if run[0] is TOY]
    assert runs, f"the check {name} skips the new row"
    del RAN[:]
    for case, dtype, seed in runs:
        spec.run(case, dtype, seed)
    assert RAN == [(name, TOY.id, np.dtype(dtype).name, seed) for _, dtype, seed in runs]


@pytest.mark.parametrize("name", ["gradcheck_float64", "matches_torch"])
def test_a_wrong_backward_fails(name):
    """The planted slip fails gradcheck (naming the input) and the torch comparison (printing
    ours and torch's dL/dx), in every dtype and seed."""
    runs = CHECKS[name].runs([WRONG_TOY])
    assert runs
    for case, dtype, seed in runs:
        with pytest.raises(AssertionError) as failure:
            CHECKS[name].run(case, dtype, seed)
        message = str(failure.value)
        if name == "gradcheck_float64":
            assert "input" in message
        else:
            assert "grad_x" in message and "ours:" in message and "torch:" in message
