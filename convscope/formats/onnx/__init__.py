"""convscope/formats/onnx"""
