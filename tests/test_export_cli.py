"""``chainrule export``: .npz, .safetensors and .onnx into each other; a graph chainrule cannot
read is one line on stderr."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, save

import chainrule as cr
from cli_helpers import assert_one_line_error, run_cli
from interop_helpers import trained_preset


def test_export_to_onnx_and_back(tmp_path):
    model, x = trained_preset("cnn")
    model.save(tmp_path / "m.npz")
    result = run_cli("export", "m.npz", "--to", "onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote m.onnx: ONNX opset 17, input 'input' (N, 28, 28)" in result.stdout
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    runtime = session.run(None, {"input": x})[0]
    assert np.abs(runtime - model.predict(x)).max() <= 1e-5 * np.abs(runtime).max()
    result = run_cli("export", "m.onnx", "--to", "safetensors", "-o", "back.safetensors",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    back = cr.load_model(tmp_path / "back.safetensors")
    assert np.array_equal(back.predict(x), model.predict(x))
    assert run_cli("export", "back.safetensors", "--to", "npz", cwd=tmp_path).returncode == 0
    assert np.array_equal(cr.load_model(tmp_path / "back.npz").predict(x), model.predict(x))


def test_export_errors_are_one_line(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Cos", ["x"], ["y"], name="cos_1")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
         str(tmp_path / "cos.onnx"))
    line = assert_one_line_error(run_cli("export", "cos.onnx", "--to", "npz", cwd=tmp_path),
                                 "export")
    assert "node 'cos_1' (Cos): chainrule does not import this operator" in line
    assert not (tmp_path / "cos.npz").exists()
    line = assert_one_line_error(run_cli("export", "none.npz", "--to", "onnx", cwd=tmp_path),
                                 "export")
    assert "model file not found: none.npz" in line
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    line = assert_one_line_error(run_cli("export", "m.onnx", "--to", "onnx", cwd=tmp_path),
                                 "export")
    assert "is the model file itself" in line
