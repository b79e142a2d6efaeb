"""Other formats and frameworks: ONNX (export and import), PyTorch (both ways), safetensors.

Each optional package (onnx, onnxruntime, torch, safetensors) is imported only inside the
function that needs it; without it, that function raises ImportError naming the install
command (``pip install "chainrule[onnx]"``, ``"chainrule[torch]"``,
``"chainrule[safetensors]"``).
"""

from .onnx_export import OPSET, export_onnx
from .onnx_import import import_onnx
from .torch import from_torch, to_torch

__all__ = ["OPSET", "export_onnx", "from_torch", "import_onnx", "to_torch"]
