"""The baseline for benchmarks/serving.py: a scoring script of the usual kind, JSON -> DataFrame -> predict.

Served by the same azmlinfsrv, over the same model, as jobs/src/score.py.
"""

import json
import os
from pathlib import Path

import mlflow.sklearn
import pandas as pd

model = None


def init():
    global model
    folder = min(Path(os.environ["AZUREML_MODEL_DIR"]).rglob("MLmodel"), key=lambda path: len(path.parts)).parent
    model = mlflow.sklearn.load_model(str(folder))


def run(raw_data):
    records = json.loads(raw_data)["data"]
    return model.predict(pd.DataFrame(records)).tolist()
