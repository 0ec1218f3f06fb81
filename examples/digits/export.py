"""Train a small digit classifier in PyTorch on scikit-learn's bundled `load_digits` data and export it to ONNX.

Writes:
  examples/models/digits/1/model.onnx   the model `modelgate up` serves (input "input" FP32 [-1,1,8,8] with pixel
                                        values scaled to 0..1, output "logits" FP32 [-1,10])
  examples/digits/golden.json           test images, their labels and the logits PyTorch computed for them

Run once on a developer machine (the tests only read the committed outputs):
  python -m venv .venv && .venv/bin/pip install torch scikit-learn onnx onnxscript
  .venv/bin/python examples/digits/export.py
"""

import json
import pathlib

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
torch.manual_seed(0)
np.random.seed(0)

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
order = np.random.permutation(len(x))
train, test = order[:1500], order[1500:]

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
    nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    nn.Linear(64, 10),
)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train]).long()
for epoch in range(40):
    perm = torch.randperm(len(xt))
    for i in range(0, len(xt), 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()

model.eval()
with torch.no_grad():
    logits = model(torch.from_numpy(x[test]))
accuracy = (logits.argmax(1).numpy() == y[test]).mean()
print(f"test accuracy on {len(test)} held-out digits: {accuracy:.3f}")

out = ROOT / "models" / "digits" / "1" / "model.onnx"
out.parent.mkdir(parents=True, exist_ok=True)
torch.onnx.export(
    model,
    (torch.zeros(1, 1, 8, 8),),
    str(out),
    input_names=["input"],
    output_names=["logits"],
    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    opset_version=17,
    dynamo=False,
)
print(f"wrote {out} ({out.stat().st_size} bytes)")

golden = {
    "model": "digits",
    "input": "input",
    "output": "logits",
    "test_accuracy": float(accuracy),
    "torch_version": torch.__version__,
    "cases": [
        {"label": int(y[i]), "input": x[i].reshape(-1).tolist(), "logits": logits[k].tolist()}
        for k, i in enumerate(test[:16])
    ],
}
(ROOT / "digits" / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
print("wrote examples/digits/golden.json")
