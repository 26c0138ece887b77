"""ONNX export and import (onnx and onnxruntime are optional: ``pip install 'convscope[onnx]'``).

``builder.py`` holds the objects handed to the layers' ``to_onnx`` / ``from_onnx`` hooks,
``export.py`` writes a graph, ``read.py`` reads one back.  Importing this package imports no onnx.
"""

from .builder import GraphBuilder, GraphReader
from .export import DEFAULT_OPSET, MIN_OPSET, export_onnx, run_onnx
from .read import IMPORT_MIN_OPSET, import_onnx, onnx_metadata

__all__ = ["export_onnx", "import_onnx", "onnx_metadata", "run_onnx", "DEFAULT_OPSET",
           "MIN_OPSET", "IMPORT_MIN_OPSET", "GraphBuilder", "GraphReader"]
