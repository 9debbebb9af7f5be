"""Deployment: export (ONNX, torch.export) that keeps the savings, int8, prediction from a file alone.

The ONNX tools (onnx, onnxscript, onnxruntime) are the optional `export` extra, imported only
when used.
"""
