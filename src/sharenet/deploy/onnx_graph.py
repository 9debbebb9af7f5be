"""Optional ONNX tooling (the `export` extra) and the clean-up that keeps an export one copy per tensor.

`torch.onnx.export` stores each parameter once: a shared kernel is one initializer that several
Conv nodes read. What defeats the savings is what runs afterwards: constant folding turns a
template mix (coefficients x bank) into one folded kernel per conv, and BatchNorm fusion
multiplies a shared kernel into one copy per use (PyTorch issue #108342). So sharenet exports
unoptimised, folds only small shape constants (never a node that reads a stored tensor), drops
the all-zero biases the exporter adds to bias-free convs and the attributes that repeat a
default, and leaves every BatchNorm a BatchNormalization node (onnxruntime fuses them in memory
when it loads the file, which costs no bytes on disk).
"""

from __future__ import annotations

import importlib

from ..errors import SharenetError

EXTRA = "pip install 'sharenet[export]'  (onnx, onnxscript, onnxruntime)"
SMALL = 1024  # constants up to this many elements are folded: shapes, axes, pads; never weights


def require(module: str):
    """Import one of the export extra's packages, or say in one line how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SharenetError(
            f"{module} is not installed; ONNX export and inference need the export extra: {EXTRA}"
        ) from None


def tidy(model) -> None:
    """In place on an onnx_ir Model: fold small constants, drop zero conv biases, strip debug records."""
    optimizer = require("onnxscript.optimizer")
    stored = set(model.graph.initializers.values())
    optimizer.fold_constants(  # a node reading a stored tensor stays: folding it would store a copy
        model,
        input_size_limit=SMALL,
        output_size_limit=SMALL,
        should_fold=lambda node: False if any(v in stored for v in node.inputs) else None,
    )
    for node in model.graph:
        if node.op_type == "Conv" and len(node.inputs) == 3 and _is_zero(node.inputs[2]):
            node.resize_inputs(2)
    optimizer.remove_unused_nodes(model)
    for name in [n for n, v in model.graph.initializers.items() if not v.uses()]:
        model.graph.initializers.pop(name)
    model.graph.metadata_props.clear()  # torch's record of the traced program: text as large as the graph
    outputs = set(model.graph.outputs)
    opset = model.opset_imports[""]
    for i, node in enumerate(model.graph):
        _drop_defaults(node, opset)
        node.metadata_props.clear()
        node.name = f"n{i}"
        for j, value in enumerate(node.outputs):
            value.metadata_props.clear()
            if value not in outputs:  # intermediates: short names, no inferred shapes (onnxruntime infers them)
                value.name, value.shape, value.type = f"t{i}_{j}", None, None
    for value in model.graph.initializers.values():
        value.metadata_props.clear()


def _drop_defaults(node, opset: int) -> None:
    """Remove attributes that repeat the operator's default (a Conv's group=1, dilations of 1, ...)."""
    onnx = require("onnx")
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return
    for name in list(node.attributes):
        value = node.attributes[name].value
        default = schema.attributes[name].default_value if name in schema.attributes else None
        default = onnx.helper.get_attribute_value(default) if default is not None and default.name else None
        if default is not None and default in (value, str(value).encode()):
            del node.attributes[name]
        elif node.op_type == "Conv" and (name == "kernel_shape" or (name == "dilations" and set(value) == {1})):
            del node.attributes[name]  # kernel_shape: the weight's shape says it


def _is_zero(value) -> bool:
    const = value.const_value if value is not None else None
    return const is not None and not const.numpy().any()


def initializer_bytes(proto) -> int:
    """Bytes of the tensors stored in an ONNX model: initializers and Constant nodes' values."""
    numpy_helper = require("onnx.numpy_helper")
    total = sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).nbytes for a in node.attribute if a.name == "value")
    return total
