"""Example runner A: noisy descent per learning rate (the original demo's first sub-agent)."""

import json
import math
import os
import random

task = json.loads(os.environ["PRISM_PARAMS"])["task"]
random.seed(42)
best_lr, best_loss = None, math.inf
for lr in [0.1, 0.01, 0.001, 0.0001]:
    loss = 2.3
    for step in range(200):
        loss -= lr * random.gauss(0, 1) * math.exp(-step * lr * 0.5)
        loss = max(loss, 0.01)
    loss += random.gauss(0, 0.05)
    if loss < best_loss:
        best_lr, best_loss = lr, loss
print(json.dumps({"task": task, "best_lr": best_lr, "best_loss": round(best_loss, 6)}))
