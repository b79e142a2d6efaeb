"""ONNX export and import: every layer row, exported, passes onnx.checker and gives chainrule's
``predict`` in onnx's reference evaluator and in onnxruntime (to 1e-5 of the output's scale);
the MNIST-trained presets likewise; export → import is exact; bad graphs are one error."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import chainrule as cr
from chainrule import layers as L
from chainrule.interop import OPSET, export_onnx, import_onnx
from helpers import assert_close_to_scale
from interop_helpers import PRESETS, ROWS, row_model, trained_preset

RTOL = 1e-5


def run_everywhere(model, x, tmp_path):
    """(chainrule, reference evaluator, onnxruntime) outputs for ``x``; the file is checked."""
    path = tmp_path / f"{model.name}.onnx"
    proto = export_onnx(model, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    feed = {"input": x.astype(np.int64) if x.dtype.kind == "i" else x}
    reference = ReferenceEvaluator(proto).run(None, feed)[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runtime = session.run(None, feed)[0]
    return model.predict(x), reference, runtime, path


@pytest.mark.parametrize("row", list(ROWS))
def test_layer_row_in_reference_evaluator_and_onnxruntime(row, tmp_path):
    model, x = row_model(row)
    ours, reference, runtime, path = run_everywhere(model, x, tmp_path)
    assert_close_to_scale(reference, ours, RTOL, f"{row}: reference evaluator")
    assert_close_to_scale(runtime, ours, RTOL, f"{row}: onnxruntime")
    if ROWS[row].onnx_import:
        back = import_onnx(path)
        assert_same_model(back, model, x)


def assert_same_model(back, model, x):
    """Identical layers' names, weights, buffers and outputs (random states aside)."""
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".rng")}
    theirs = {k: v for k, v in back.state_dict().items() if not k.endswith(".rng")}
    assert list(theirs) == list(state)
    for key, value in state.items():
        assert theirs[key].dtype == value.dtype and np.array_equal(theirs[key], value), key
    assert back.input_shape == model.input_shape and back.dtype == model.dtype
    assert np.array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_trained_on_mnist(preset, tmp_path):
    model, x = trained_preset(preset, mnist=True)
    ours, reference, runtime, path = run_everywhere(model, x, tmp_path)
    assert_close_to_scale(reference, ours, RTOL, f"{preset}: reference evaluator")
    assert_close_to_scale(runtime, ours, RTOL, f"{preset}: onnxruntime")
    assert (runtime.argmax(1) == ours.argmax(1)).all()
    back = import_onnx(path)
    assert_same_model(back, model, x)


def test_graph_interface(tmp_path):
    model, x = trained_preset("cnn")
    proto = export_onnx(model)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "output"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 28, 28]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 10]
    # Initializers carry the state_dict names; the batch axis is dynamic in onnxruntime.
    names = {t.name for t in proto.graph.initializer}
    assert {"conv2d_1.W", "batchnorm_1.running_var", "dense_2.b"} <= names
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        assert session.run(None, {"input": x[:n]})[0].shape == (n, 10)


def test_unexportable_layer_is_named(tmp_path):
    class Cube(L.Layer):
        def _forward(self, x, training):
            return x ** 3

    model = cr.Sequential([L.Dense(3, input_shape=(4,)), Cube(name="cube_1")])
    with pytest.raises(ValueError, match=r"layer 'cube_1' \(Cube\) has no ONNX form"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ValueError, match="not built"):
        export_onnx(cr.Sequential([L.Dense(3)]))


# ---------------------------------------------------------------------- graphs from elsewhere
def graph(nodes, inputs, output, weights, opset=OPSET, out_rank=2):
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
    out_dims = ["batch", *(f"d{i}" for i in range(1, out_rank))]
    g = helper.make_graph(nodes, "handmade", inputs,
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_dims)],
                          initializer=tensors)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def float_input(*dims, name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *dims])


def test_torch_style_gemm_and_matmul_add_and_reshape():
    rng = np.random.default_rng(0)
    w = {"fc1.weight": rng.standard_normal((6, 12)).astype(np.float32),
         "fc1.bias": rng.standard_normal(6).astype(np.float32),
         "W2": rng.standard_normal((6, 3)).astype(np.float32),
         "b2": rng.standard_normal((1, 3)).astype(np.float32)}
    shape = helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
        np.array([0, -1], dtype=np.int64)))
    nodes = [shape, helper.make_node("Reshape", ["x", "shape"], ["flat"], name="/0/Reshape"),
             helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["h"], transB=1,
                              name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "W2"], ["z"]),
             helper.make_node("Add", ["b2", "z"], ["y"])]
    proto = graph(nodes, [float_input(3, 4)], "y", w, opset=13)
    model = import_onnx(proto, name="torch_mlp")
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "ReLU",
                                                                "Dense"]
    assert [layer.name for layer in model.layers] == ["flatten_1", "fc1", "act", "dense_1"]
    assert np.array_equal(model.state_dict()["fc1.W"], w["fc1.weight"].T)
    x = rng.standard_normal((4, 3, 4)).astype(np.float32)
    expected = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    assert_close_to_scale(model.predict(x), expected, RTOL, "handmade mlp")


def test_conv_auto_pad_and_global_pool():
    rng = np.random.default_rng(1)
    w = {"W": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
         "B": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], auto_pad="SAME_UPPER",
                              strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    proto = graph(nodes, [float_input(2, 8, 7)], "y", w)
    model = import_onnx(proto)
    assert model.layers[0].padding == "same" and model.layers[1].strides == (1, 1)
    x = rng.standard_normal((3, 2, 8, 7)).astype(np.float32)
    expected = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    assert_close_to_scale(model.predict(x), expected, RTOL, "handmade conv")


def refused(nodes, weights, inputs=None, output="y"):
    proto = graph(nodes, inputs or [float_input(2, 6, 6)], output, weights)
    with pytest.raises(ValueError) as info:
        import_onnx(proto)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unsupported_graphs_are_refused_by_name():
    w = {"W": np.ones((3, 2, 3, 3), np.float32)}
    assert "node 'c' (Cos): chainrule does not import this operator" in refused(
        [helper.make_node("Cos", ["x"], ["y"], name="c")], {})
    assert "pads [1, 0, 0, 0]" in refused(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 0, 0, 0])], w)
    assert "group=2" in refused([helper.make_node("Conv", ["x", "W1"], ["y"], group=2)],
                                {"W1": np.ones((4, 1, 3, 3), np.float32)})
    assert "count_include_pad=1" in refused([helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], {})
    assert "ceil_mode=1" in refused([helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], {})
    assert "feeds 2 nodes" in refused([helper.make_node("Relu", ["x"], ["a"]),
                                       helper.make_node("Sigmoid", ["x"], ["b"]),
                                       helper.make_node("Add", ["a", "b"], ["y"])], {})
    assert "its weight 'Wt' is computed by the graph" in refused(
        [helper.make_node("Transpose", ["W2"], ["Wt"]), helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("MatMul", ["f", "Wt"], ["y"])], {"W2": np.ones((3, 72), np.float32)})
    assert "the graph has 2 inputs" in refused(
        [helper.make_node("Add", ["x", "x2"], ["y"])], {},
        inputs=[float_input(2, 6, 6), float_input(2, 6, 6, name="x2")])
    assert "not a flatten" in refused([helper.make_node("Reshape", ["x", "s"], ["y"])],
                                      {"s": np.array([0, 6, 12], np.int64)})


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ValueError, match="bad.onnx is not"):
        import_onnx(tmp_path / "bad.onnx")
    with pytest.raises(FileNotFoundError):
        import_onnx(tmp_path / "missing.onnx")
