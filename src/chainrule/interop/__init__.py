"""Other formats and frameworks: ONNX, PyTorch and safetensors.

Each optional package (onnx, onnxruntime, torch, safetensors) is imported only inside the
function that needs it; without it, that function raises ImportError naming the install
command.
"""
