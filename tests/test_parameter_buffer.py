"""The packed parameters: one flat buffer that every value and gradient of a model is a view of,
updated by the optimizer in whole-array operations, with the same results as one by one."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses, models, optimizers
from chainrule.parameter import Parameter, ParameterBuffer


def small_mlp(optimizer=None, seed=0):
    model = cr.Sequential([
        layers.Dense(16, activation="relu", input_shape=(12,)),
        layers.Dropout(0.2),
        layers.Dense(16, activation="relu"),
        layers.Dense(4),
    ], seed=seed)
    model.compile(optimizer or optimizers.Adam(1e-2),
                  losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12)).astype(np.float32), rng.integers(0, 4, n)


def unpack(model):
    """Re-point every value to a copy of its own: the optimizer then updates one by one."""
    for p in model.parameters():
        p.value = p.value.copy()


def test_a_built_model_packs_its_values_into_one_buffer():
    model = small_mlp()
    params = model.parameters()
    buffer = params[0].buffer
    assert isinstance(buffer, ParameterBuffer)
    assert all(p.buffer is buffer for p in params)
    assert buffer.size == model.count_params() == buffer.value.size
    assert buffer.value.dtype == np.float32
    for p in params:
        assert p.value.base is buffer.value
        assert np.shares_memory(p.value, buffer.value)
    # The segments are disjoint and cover the buffer in order.
    assert np.array_equal(buffer.value, np.concatenate([p.value.ravel() for p in params]))
    # layer.W is what users see, and it is the buffer.
    model.layers[0].W.value[0, 0] = 7.0
    assert 7.0 in buffer.value


def test_the_optimizer_updates_the_shared_buffer_with_its_gradients():
    model = small_mlp()
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    buffer = model.parameters()[0].buffer
    opt = model.optimizer
    for p in model.parameters():
        assert np.shares_memory(p.grad, buffer.grad)
        for key in ("m", "v"):
            assert np.shares_memory(opt.state[p][key], opt._packed.arrays[key][0])
    before = buffer.value.copy()
    model.train_step(x[:32], y[:32])
    assert not np.array_equal(before, buffer.value)
    assert all(p.value.base is buffer.value for p in model.parameters())


@pytest.mark.parametrize("make", [
    lambda: optimizers.Adam(1e-2),
    lambda: optimizers.AdamW(1e-2, weight_decay=0.1),
    lambda: optimizers.Adam(1e-2, weight_decay=0.01),
    lambda: optimizers.SGD(0.1),
    lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    lambda: optimizers.SGD(0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    lambda: optimizers.RMSprop(1e-2),
    lambda: optimizers.RMSprop(1e-2, momentum=0.9, centered=True, weight_decay=0.01),
])
def test_packed_steps_equal_one_parameter_at_a_time(make):
    x, y = data()
    packed, single = small_mlp(make()), small_mlp(make())
    unpack(single)
    packed.fit(x, y, epochs=3, batch_size=32, seed=1, verbose=0)
    single.fit(x, y, epochs=3, batch_size=32, seed=1, verbose=0)
    assert single.optimizer._packed is None
    assert packed.optimizer._packed is not None
    for p, q in zip(packed.parameters(), single.parameters(), strict=True):
        np.testing.assert_array_equal(p.value, q.value)
    for p, q in zip(packed.parameters(), single.parameters(), strict=True):
        for key, value in packed.optimizer.state[p].items():
            np.testing.assert_array_equal(value, single.optimizer.state[q][key])


def test_state_loaded_by_name_is_taken_into_the_buffer():
    x, y = data()
    trained = small_mlp()
    trained.fit(x, y, epochs=1, batch_size=32, verbose=0)
    resumed = small_mlp()
    resumed.load_state_dict(trained.state_dict())
    resumed.optimizer.load_state_dict(trained.optimizer.state_dict())
    reference = trained.copy()
    reference.compile(optimizers.Adam(1e-2), trained.loss)
    unpack(reference)
    reference.optimizer.load_state_dict(trained.optimizer.state_dict())
    for model in (trained, resumed, reference):
        model.train_step(x[:32], y[:32])
    for p, q, r in zip(trained.parameters(), resumed.parameters(), reference.parameters(),
                       strict=True):
        np.testing.assert_array_equal(p.value, q.value)
        np.testing.assert_array_equal(p.value, r.value)
    state = resumed.optimizer.state_dict()["state"]
    assert set(state) == {name for name, _ in resumed.named_parameters()}
    assert all(entries["step"] == 4 for entries in state.values())


def test_a_model_that_gains_a_layer_packs_again():
    model = small_mlp()
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.add(layers.Dense(3))
    params = model.parameters()
    assert all(p.buffer is params[0].buffer for p in params)
    assert params[0].buffer.size == model.count_params()


def test_a_step_before_backward_still_names_the_parameter():
    model = small_mlp()
    with pytest.raises(RuntimeError, match="no gradient"):
        model.optimizer.step(model.parameters())


def test_buffer_refuses_mixed_dtypes_and_repeats():
    a = Parameter(np.zeros(3, np.float32), "a")
    b = Parameter(np.zeros(3, np.float64), "b")
    with pytest.raises(ValueError, match="one dtype"):
        ParameterBuffer([a, b])
    with pytest.raises(ValueError, match="twice"):
        ParameterBuffer([a, a])


def test_a_training_step_stays_float32_in_the_buffer():
    model = models.mlp(seed=0, input_shape=(12,), hidden=(8,))
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    buffer = model.parameters()[0].buffer
    assert buffer.value.dtype == buffer.grad.dtype == np.float32
    assert all(a.dtype == np.float32 for a, _ in model.optimizer._packed.arrays.values())
    assert model.optimizer._packed.scratch.dtype == np.float32
