"""Python baseline for the model-server benchmark: FastAPI + uvicorn + onnxruntime serving the same ONNX model
with the same OIP v2 JSON request and response shapes (no batching, as a typical hand-written service).

Usage: python bench/python_baseline.py MODEL.onnx PORT
"""

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request

model_path, port = sys.argv[1], int(sys.argv[2])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0].name
out = session.get_outputs()[0].name
app = FastAPI()


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request):
    body = await request.json()
    t = body["inputs"][0]
    x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
    y = session.run([out], {inp: x})[0]
    return {"model_name": model, "model_version": "1", "outputs": [
        {"name": out, "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1).tolist()}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
