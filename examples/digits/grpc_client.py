#!/usr/bin/env python3
"""Calls the digits model over gRPC through the gateway with the unmodified tritonclient.grpc client.

Usage: python3 examples/digits/grpc_client.py HOST:PORT API_KEY   (pip install 'tritonclient[grpc]')

The API key goes in the call's metadata (`x-api-key`), as for REST. Prints the predicted digit of each golden case
and the model version that answered; a refusal is a gRPC status (UNAUTHENTICATED, PERMISSION_DENIED,
RESOURCE_EXHAUSTED, INVALID_ARGUMENT) whose message starts with the gateway's error code.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    url, key = sys.argv[1], sys.argv[2]
    golden = json.loads((pathlib.Path(__file__).parent / "golden.json").read_text())
    cases = golden["cases"][:3]
    pixels = np.array([c["input"] for c in cases], dtype=np.float32).reshape(len(cases), 1, 8, 8)
    client = grpcclient.InferenceServerClient(url=url)
    headers = {"x-api-key": key}
    inp = grpcclient.InferInput("input", list(pixels.shape), "FP32")
    inp.set_data_from_numpy(pixels)
    try:
        result = client.infer("digits", [inp], headers=headers)
    except InferenceServerException as e:
        print(json.dumps({"status": e.status(), "message": e.message()}))
        return 1
    logits = result.as_numpy("logits")
    response = result.get_response()
    print(json.dumps({
        "model": response.model_name,
        "model_version": response.model_version,
        "predicted": [int(i) for i in logits.argmax(axis=1)],
        "expected": [int(np.argmax(c["logits"])) for c in cases],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
