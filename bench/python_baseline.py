"""Python baseline for the model-server benchmark: FastAPI + uvicorn + onnxruntime serving the same ONNX model
with the same OIP v2 JSON request and response shapes (no batching, as a typical hand-written service), onnxruntime's
intra-op threads set to the cores it may use. Every
input of the request is fed (FP32 and INT64 tensors), the first output is returned.

Usage: python bench/python_baseline.py MODEL.onnx PORT
"""

import os
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request

model_path, port = sys.argv[1], int(sys.argv[2])
opts = ort.SessionOptions()
opts.intra_op_num_threads = len(os.sched_getaffinity(0))  # the cores it may use (1 when pinned with taskset)
session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
out = session.get_outputs()[0].name
DTYPES = {"FP32": np.float32, "INT64": np.int64}
app = FastAPI()


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request):
    body = await request.json()
    feed = {t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"]) for t in body["inputs"]}
    y = session.run([out], feed)[0]
    return {"model_name": model, "model_version": "1", "outputs": [
        {"name": out, "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1).tolist()}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
