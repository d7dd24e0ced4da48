"""Trains the iris model MLServer serves in development and tests, and writes
what scikit-learn itself predicts for a fixed set of inputs, so that tests can
compare the pipeline's answers with the model's own.

    python train.py OUTDIR

writes OUTDIR/model.joblib and OUTDIR/predictions.json:
    {"inputs": [[f, f, f, f], ...], "predict": [class, ...],
     "classes": ["setosa", ...], "sklearn": "1.x"}

The inputs are the 150 iris rows followed by 50 rows drawn around them with a
fixed seed (so the set holds points near the decision boundaries too). Every
value is a float64 as JSON prints it; the pipeline sends them as FP64, so the
model sees the same numbers scikit-learn saw here.
"""

import json
import os
import sys

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(out: str) -> None:
    iris = load_iris()
    x, y = iris.data.astype(np.float64), iris.target
    model = LogisticRegression(max_iter=1000).fit(x, y)

    rng = np.random.default_rng(20240601)
    extra = x[rng.integers(0, len(x), 50)] + rng.normal(0, 0.3, (50, 4))
    inputs = np.round(np.vstack([x, extra]), 3)
    predict = model.predict(inputs)

    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.joblib.tmp")
    joblib.dump(model, tmp)
    os.replace(tmp, os.path.join(out, "model.joblib"))
    body = {
        "inputs": inputs.tolist(),
        "predict": [int(p) for p in predict],
        "classes": [str(c) for c in iris.target_names],
        "sklearn": sklearn.__version__,
    }
    tmp = os.path.join(out, "predictions.json.tmp")
    with open(tmp, "w") as f:
        json.dump(body, f)
    os.replace(tmp, os.path.join(out, "predictions.json"))


if __name__ == "__main__":
    main(sys.argv[1])
