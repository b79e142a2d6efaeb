"""Optimizers and schedules against torch.optim: same gradients in, same trajectory out."""

import math
import tracemalloc

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import losses, optimizers, schedules
from chainrule.layers import Dense

STEPS = 25
SHAPES = [(3, 4), (4,), (2, 3, 2)]

# (ours, torch class, torch kwargs): the same hyperparameters spelled both ways.
CASES = {
    "sgd": (lambda: optimizers.SGD(lr=0.1), torch.optim.SGD, dict(lr=0.1)),
    "sgd_momentum": (
        lambda: optimizers.SGD(lr=0.05, momentum=0.9),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9),
    ),
    "sgd_nesterov": (
        lambda: optimizers.SGD(lr=0.05, momentum=0.9, nesterov=True),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True),
    ),
    "sgd_dampening": (
        lambda: optimizers.SGD(lr=0.05, momentum=0.8, dampening=0.3),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, dampening=0.3),
    ),
    "sgd_weight_decay": (
        lambda: optimizers.SGD(lr=0.05, momentum=0.9, weight_decay=0.1),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    ),
    "sgd_nesterov_weight_decay": (
        lambda: optimizers.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    "adam": (
        lambda: optimizers.Adam(lr=0.01),
        torch.optim.Adam,
        dict(lr=0.01),
    ),
    # A large ε makes its placement (outside the bias-corrected √v̂) visible in the trajectory.
    "adam_betas_eps": (
        lambda: optimizers.Adam(lr=0.02, beta1=0.8, beta2=0.99, eps=0.1),
        torch.optim.Adam,
        dict(lr=0.02, betas=(0.8, 0.99), eps=0.1),
    ),
    "adam_weight_decay": (
        lambda: optimizers.Adam(lr=0.01, weight_decay=0.1),
        torch.optim.Adam,
        dict(lr=0.01, weight_decay=0.1),
    ),
    "adamw": (
        lambda: optimizers.AdamW(lr=0.01, weight_decay=0.1),
        torch.optim.AdamW,
        dict(lr=0.01, weight_decay=0.1),
    ),
    "adamw_default_decay": (
        lambda: optimizers.AdamW(lr=0.01),
        torch.optim.AdamW,
        dict(lr=0.01),
    ),
    "rmsprop": (
        lambda: optimizers.RMSprop(lr=0.01),
        torch.optim.RMSprop,
        dict(lr=0.01),
    ),
    "rmsprop_momentum": (
        lambda: optimizers.RMSprop(lr=0.01, momentum=0.9),
        torch.optim.RMSprop,
        dict(lr=0.01, momentum=0.9),
    ),
    "rmsprop_centered": (
        lambda: optimizers.RMSprop(lr=0.01, alpha=0.9, centered=True),
        torch.optim.RMSprop,
        dict(lr=0.01, alpha=0.9, centered=True),
    ),
    "rmsprop_weight_decay": (
        lambda: optimizers.RMSprop(lr=0.01, weight_decay=0.1),
        torch.optim.RMSprop,
        dict(lr=0.01, weight_decay=0.1),
    ),
    "rmsprop_large_eps": (
        lambda: optimizers.RMSprop(lr=0.01, eps=0.1, centered=True),
        torch.optim.RMSprop,
        dict(lr=0.01, eps=0.1, centered=True),
    ),
    "rmsprop_all": (
        lambda: optimizers.RMSprop(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
        torch.optim.RMSprop,
        dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
    ),
}

# float64 isolates formula differences from rounding: any real difference in an update rule
# shows up far above 1e-6, while rounding stays near 1e-15. In float32 (unit roundoff 6e-8)
# the two libraries order a few operations differently (torch's Adam uses lerp, addcdiv);
# a few ulps per step over 25 steps stay below 25 · 4 · 6e-8 ≈ 6e-6, hence 1e-5.
TOLERANCES = {np.float64: 1e-6, np.float32: 1e-5}


def assert_close(ours, theirs, rtol, what):
    """Relative comparison; entries near zero are measured against the array's scale."""
    theirs = np.asarray(theirs)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    np.testing.assert_allclose(
        ours, theirs, rtol=rtol, atol=rtol * scale,
        err_msg=f"{what}\nours:\n{ours!r}\ntorch:\n{theirs!r}",
    )


def make_params(rng, dtype):
    return [cr.Parameter(rng.standard_normal(s).astype(dtype), name=f"p{i}")
            for i, s in enumerate(SHAPES)]


def run_trajectories(ours, torch_cls, torch_kwargs, dtype, steps=STEPS, seed=0,
                     torch_scheduler=None):
    """Drive both optimizers with one sequence of random gradients; compare after each step."""
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype)
    tparams = [torch.tensor(p.value.copy(), requires_grad=True) for p in params]
    topt = torch_cls(tparams, **torch_kwargs)
    sched = None if torch_scheduler is None else torch_scheduler(topt)
    for step in range(steps):
        for p, tp in zip(params, tparams, strict=True):
            # Gradients of varied scale exercise the adaptive optimizers' denominators.
            g = (rng.standard_normal(p.shape) * rng.uniform(0.1, 3.0)).astype(dtype)
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        assert ours.learning_rate == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        ours.step(params)
        topt.step()
        if sched is not None:
            sched.step()
        for p, tp in zip(params, tparams, strict=True):
            assert p.value.dtype == dtype
            assert_close(p.value, tp.detach().numpy(), TOLERANCES[dtype],
                         f"{type(ours).__name__} {dtype.__name__} {p.name} after step {step + 1}")
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch(case, dtype):
    make, torch_cls, torch_kwargs = CASES[case]
    run_trajectories(make(), torch_cls, torch_kwargs, dtype)


LATE_START = 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", ["adam", "adam_betas_eps", "adam_weight_decay", "adamw"])
def test_parameter_that_joins_later_starts_at_its_own_first_step_like_torch(case, dtype):
    """The last parameter gets no gradient for LATE_START steps (torch skips a parameter whose
    grad is None, and creates its state on its first step); ours is passed only from then on.
    Its bias correction starts at t = 1 while the others' continue."""
    make, torch_cls, torch_kwargs = CASES[case]
    ours = make()
    rng = np.random.default_rng(0)
    params = make_params(rng, dtype)
    tparams = [torch.tensor(p.value.copy(), requires_grad=True) for p in params]
    topt = torch_cls(tparams, **torch_kwargs)
    for step in range(STEPS):
        active = len(params) if step >= LATE_START else len(params) - 1
        for p, tp in zip(params[:active], tparams[:active], strict=True):
            g = (rng.standard_normal(p.shape) * rng.uniform(0.1, 3.0)).astype(dtype)
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        ours.step(params[:active])
        topt.step()
        for p, tp in zip(params, tparams, strict=True):
            assert_close(p.value, tp.detach().numpy(), TOLERANCES[dtype],
                         f"{type(ours).__name__} {dtype.__name__} {p.name} after step {step + 1}")
    assert ours.iterations == STEPS
    assert [ours.state[p]["step"] for p in params] == [STEPS, STEPS, STEPS - LATE_START]
    assert [int(topt.state[tp]["step"]) for tp in tparams] == [STEPS, STEPS, STEPS - LATE_START]


def test_adam_first_step_of_a_new_parameter_is_lr_after_many_steps():
    """Bias correction of a zero-moment parameter uses its own t = 1: |Δp| = lr·|g|/(|g| + ε)."""
    opt = optimizers.Adam(lr=0.01)
    old = cr.Parameter(np.ones(3), name="old")
    for _ in range(50):
        old.grad = np.full(3, 0.5)
        opt.step([old])
    new = cr.Parameter(np.zeros(3), name="new")
    new.grad = np.array([2.0, -0.5, 1e-3])
    old.grad = np.full(3, 0.5)
    opt.step([old, new])
    np.testing.assert_allclose(-new.value, 0.01 * np.sign(new.grad), rtol=1e-4)
    assert (opt.state[old]["step"], opt.state[new]["step"], opt.iterations) == (51, 1, 51)


@pytest.mark.parametrize(
    "ours, torch_sched",
    [
        (lambda: schedules.StepDecay(0.1, step_size=4, gamma=0.5, per="step"),
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)),
        (lambda: schedules.ExponentialDecay(0.1, gamma=0.9, per="step"),
         lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
        (lambda: schedules.CosineDecay(0.1, T_max=STEPS, eta_min=0.001, per="step"),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.001)),
    ],
    ids=["step", "exponential", "cosine"],
)
def test_per_step_schedule_drives_the_update_like_torch(ours, torch_sched):
    """A per-step schedule changes the rate used by each update, as a torch scheduler does."""
    opt = optimizers.SGD(lr=ours(), momentum=0.9)
    run_trajectories(opt, torch.optim.SGD, dict(lr=0.1, momentum=0.9), np.float64,
                     torch_scheduler=torch_sched)


# ---------------------------------------------------------------------------- schedules

EPOCHS = 20
SCHEDULE_CASES = {
    "step": (lambda: schedules.StepDecay(0.1, step_size=3, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "exponential": (lambda: schedules.ExponentialDecay(0.1, gamma=0.85),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.85)),
    "cosine": (lambda: schedules.CosineDecay(0.1, T_max=EPOCHS),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS)),
    "cosine_eta_min": (lambda: schedules.CosineDecay(0.1, T_max=12, eta_min=0.01),
                       lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
                           o, T_max=12, eta_min=0.01)),
}


def torch_lrs(make_scheduler, epochs, lr=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("case", list(SCHEDULE_CASES))
def test_schedule_matches_torch_per_epoch(case):
    make, make_torch = SCHEDULE_CASES[case]
    # CosineAnnealingLR with T_max=12 is periodic past T_max; ours is documented to stay at
    # eta_min there, so compare within the period only.
    epochs = 13 if case == "cosine_eta_min" else EPOCHS
    expected = torch_lrs(make_torch, epochs)
    schedule = make()
    # torch computes the cosine recursively, so allow rounding; a wrong formula is off by > 1e-3.
    np.testing.assert_allclose([schedule(t) for t in range(epochs)], expected, rtol=1e-10)


def test_cosine_stays_at_eta_min_past_t_max():
    schedule = schedules.CosineDecay(0.1, T_max=5, eta_min=0.01)
    assert schedule(5) == pytest.approx(0.01)
    assert [schedule(t) for t in (6, 10, 100)] == [schedule(5)] * 3


def test_per_epoch_schedule_follows_optimizer_epoch():
    opt = optimizers.SGD(lr=schedules.StepDecay(0.1, step_size=2, gamma=0.5))
    p = cr.Parameter(np.ones(3, np.float32))
    p.grad = np.ones(3, np.float32)
    for _ in range(5):
        opt.step([p])
    assert opt.learning_rate == 0.1, "a per-epoch schedule must not move with steps"
    opt.epoch = 4
    assert opt.learning_rate == pytest.approx(0.025)


def test_per_step_schedule_is_consumed_per_step():
    schedule = schedules.ExponentialDecay(0.1, gamma=0.5, per="step")
    opt = optimizers.SGD(lr=schedule)
    p = cr.Parameter(np.zeros(1))
    p.grad = np.ones(1)
    seen = []
    for t in range(4):
        seen.append(opt.learning_rate)
        before = p.value.copy()
        opt.step([p])
        # The update used the rate announced before the step.
        assert before - p.value == pytest.approx([0.1 * 0.5**t])
    assert seen == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert opt.learning_rate == pytest.approx(0.1 * 0.5**4)


class LRRecorder(cr.Callback):
    def __init__(self):
        self.epoch_lrs, self.batch_lrs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_lrs.append(self.model.optimizer.learning_rate)
        self.batch_lrs.append([])

    def on_batch_end(self, step, logs=None):
        self.batch_lrs[-1].append(self.model.optimizer.learning_rate)


def small_classifier(optimizer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3)).astype(np.float32)
    y = rng.integers(0, 2, 12)
    model = cr.Sequential([Dense(2, input_shape=(3,))], seed=0)
    model.compile(optimizer, losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model, x, y


def test_fit_sets_epoch_for_per_epoch_schedules():
    opt = optimizers.SGD(lr=schedules.ExponentialDecay(0.1, gamma=0.5))
    model, x, y = small_classifier(opt)
    rec = LRRecorder()
    model.fit(x, y, epochs=4, batch_size=4, callbacks=[rec], verbose=0)
    assert rec.epoch_lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    for epoch, lrs in enumerate(rec.batch_lrs):
        assert lrs == pytest.approx([0.1 * 0.5**epoch] * 3), "constant within an epoch"
    assert opt.epoch == 3


def test_fit_consumes_per_step_schedule_every_step():
    opt = optimizers.SGD(lr=schedules.ExponentialDecay(0.1, gamma=0.9, per="step"))
    model, x, y = small_classifier(opt)
    rec = LRRecorder()
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[rec], verbose=0)
    flat = [lr for epoch in rec.batch_lrs for lr in epoch]
    # After step k (1-based) the next step will use 0.1 · 0.9^k.
    assert flat == pytest.approx([0.1 * 0.9**k for k in range(1, 7)])
    assert opt.iterations == 6


def test_layer_added_to_a_trained_model_starts_adam_at_step_one():
    opt = optimizers.Adam(0.01)
    model, x, y = small_classifier(opt)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)  # 3 steps per epoch
    old = model.parameters()
    model.add(Dense(2, name="head"))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    new = [p for p in model.parameters() if all(p is not q for q in old)]
    assert len(new) == 2
    assert [opt.state[p]["step"] for p in old] == [9, 9]
    assert [opt.state[p]["step"] for p in new] == [3, 3]
    assert opt.iterations == 9


# ---------------------------------------------------------------------------- state and errors


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw", "rmsprop_all"])
def test_state_is_per_parameter(case):
    opt = CASES[case][0]()
    rng = np.random.default_rng(0)
    # Two parameters of the same shape must still get separate state.
    params = [cr.Parameter(rng.standard_normal((3, 2)), name=n) for n in ("a", "b")]
    for p in params:
        p.grad = rng.standard_normal(p.shape)
    opt.step(params)
    assert list(opt.state) == params
    arrays = [a for p in params for a in opt.state[p].values() if isinstance(a, np.ndarray)]
    assert arrays, "stateful optimizers keep state arrays"
    for p in params:
        for key, value in opt.state[p].items():
            if key == "step":
                assert type(value) is int and value == 1
            else:
                assert value.shape == p.shape, key
    ids = [id(a) for a in arrays]
    assert len(set(ids)) == len(ids), "no state array is shared between parameters"
    assert all(not np.shares_memory(a, p.value) for a in arrays for p in params)


def test_plain_sgd_keeps_no_state_arrays():
    opt = optimizers.SGD(lr=0.1)
    p = cr.Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt.step([p])
    assert opt.state[p] == {}


@pytest.mark.parametrize("case", list(CASES))
def test_step_without_grad_raises(case):
    opt = CASES[case][0]()
    p = cr.Parameter(np.ones((2, 3), np.float32), name="W")
    with pytest.raises(RuntimeError, match=r"parameter 'W' \(2, 3\) has no gradient; run backward"):
        opt.step([p])


def test_update_is_in_place():
    """Layers hold references to their parameter arrays: a step must not rebind them."""
    opt = optimizers.Adam(lr=0.1)
    p = cr.Parameter(np.ones(4, np.float32))
    p.grad = np.ones(4, np.float32)
    value = p.value
    opt.step([p])
    assert p.value is value and not np.all(value == 1.0)


def bytes_allocated_by_second_step(opt, n=20_000):
    """Peak bytes NumPy allocates during the second step on a float32 parameter of n entries.

    The first step allocates state and scratch; tracemalloc sees NumPy's data buffers, so a
    temporary the size of the parameter shows up as 4n (float32) or 8n (float64) bytes.
    """
    rng = np.random.default_rng(0)
    p = cr.Parameter(rng.standard_normal(n).astype(np.float32))
    p.grad = rng.standard_normal(n).astype(np.float32)
    opt.step([p])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        opt.step([p])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, n


@pytest.mark.parametrize("case", list(CASES))
def test_step_keeps_float32(case):
    """Values and state stay float32; test_dtype.py checks every intermediate's dtype too."""
    opt = CASES[case][0]()
    rng = np.random.default_rng(0)
    p = cr.Parameter(rng.standard_normal((4, 3)).astype(np.float32))
    for _ in range(3):
        p.grad = rng.standard_normal((4, 3)).astype(np.float32)
        opt.step([p])
    assert p.value.dtype == np.float32
    for key, value in opt.state[p].items():
        if key == "step":
            assert type(value) is int and value == 3, "the step count stays an exact int"
        else:
            assert value.dtype == np.float32, key


ALLOCATION_FREE = ["sgd", "sgd_momentum", "sgd_weight_decay", "adam", "adam_betas_eps", "adamw",
                   "adamw_default_decay", "rmsprop", "rmsprop_momentum"]


@pytest.mark.parametrize("case", ALLOCATION_FREE)
def test_step_allocates_nothing_after_the_first(case):
    """The documented buffer reuse: no temporary of the parameter's size, float32 or float64."""
    peak, n = bytes_allocated_by_second_step(CASES[case][0]())
    assert peak < 0.25 * 4 * n, f"the second step allocated {peak} bytes for {n} float32 entries"


def test_allocation_check_catches_a_float64_temporary():
    """The check above is tested too: a planted np.float64 scalar makes it fail."""

    class UpcastingSGD(optimizers.SGD):
        def _update(self, value, grad, state, tmp, lr):
            value -= grad * np.float64(lr)  # float32 · float64 scalar → float64 array

    peak, n = bytes_allocated_by_second_step(UpcastingSGD(lr=0.1))
    assert peak >= 8 * n


def test_optimizer_config_round_trip():
    for make, _, _ in CASES.values():
        opt = make()
        twin = optimizers.from_config(type(opt).__name__, opt.get_config())
        assert type(twin) is type(opt) and twin.get_config() == opt.get_config()
    sched = optimizers.SGD(lr=schedules.CosineDecay(0.1, T_max=7, per="step"))
    twin = optimizers.from_config("SGD", sched.get_config())
    assert isinstance(twin.lr, schedules.CosineDecay)
    assert twin.lr.get_config() == sched.lr.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optimizers.SGD(lr=0), r"lr must be > 0, got 0"),
        (lambda: optimizers.Adam(lr=-1e-3), r"lr must be > 0, got -0.001"),
        (lambda: optimizers.SGD(nesterov=True), r"nesterov needs momentum > 0"),
        (lambda: optimizers.Adam(beta1=1.0), r"beta1 must lie in \[0, 1\), got 1.0"),
        (lambda: optimizers.RMSprop(alpha=1.5), r"alpha must lie in \[0, 1\), got 1.5"),
        (lambda: optimizers.SGD(weight_decay=-1), r"weight_decay must be >= 0, got -1"),
        (lambda: optimizers.get("adagrad"), r"unknown optimizer 'adagrad'"),
        (lambda: schedules.StepDecay(0.1, step_size=0), r"step_size must be a positive"),
        (lambda: schedules.ExponentialDecay(0.1, 0.9, per="batch"), r"per must be one of"),
    ],
)
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_get_by_name():
    for name, cls in [("sgd", optimizers.SGD), ("Adam", optimizers.Adam),
                      ("adamw", optimizers.AdamW), ("rmsprop", optimizers.RMSprop)]:
        assert type(optimizers.get(name)) is cls
    assert math.isclose(optimizers.get("adam").learning_rate, 1e-3)
