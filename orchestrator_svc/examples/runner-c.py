"""Example runner C: a gentler closed-form loss curve with more noise."""

import json
import math
import os
import random

task = json.loads(os.environ["PRISM_PARAMS"])["task"]
random.seed(99)
best_lr, best_loss = None, math.inf
for lr in [0.1, 0.01, 0.001, 0.0001]:
    loss = 2.3 * (1 - 8 * lr) ** 15 + random.gauss(0, 0.02)
    if loss < best_loss:
        best_lr, best_loss = lr, loss
print(json.dumps({"task": task, "best_lr": best_lr, "best_loss": round(best_loss, 6)}))
