"""Writes dtypes.onnx: a hand-built ONNX graph (not a trained model) that passes one input of every OIP v2 datatype
through to an output (y_T = Identity(x_T), and a Cast so the graph is not only wiring), for the backends'
datatype contract tests. Inputs are [-1, 2]. Run: python3 tests/data/models/make_dtypes.py (needs `pip install onnx`).
"""

import onnx
from onnx import TensorProto, helper

TYPES = {
    "fp16": TensorProto.FLOAT16, "fp32": TensorProto.FLOAT, "fp64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL, "bytes": TensorProto.STRING,
}
inputs, outputs, nodes = [], [], []
for name, t in TYPES.items():
    inputs.append(helper.make_tensor_value_info(f"x_{name}", t, ["batch", 2]))
    outputs.append(helper.make_tensor_value_info(f"y_{name}", t, ["batch", 2]))
    nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
# fp16 doubled through fp32, so a backend that mangles half floats shows it.
outputs.append(helper.make_tensor_value_info("twice_fp16", TensorProto.FLOAT16, ["batch", 2]))
nodes += [
    helper.make_node("Cast", ["x_fp16"], ["as_fp32"], to=TensorProto.FLOAT),
    helper.make_node("Add", ["as_fp32", "as_fp32"], ["sum_fp32"]),
    helper.make_node("Cast", ["sum_fp32"], ["twice_fp16"], to=TensorProto.FLOAT16),
]
graph = helper.make_graph(nodes, "dtypes", inputs, outputs)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelgate-tests")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, "tests/data/models/dtypes.onnx")
