"""The MLflow model that serves train_mlp.py's network: raw columns in, predictions in the target's units out.

Saved with the model (`code_paths`) and loaded with `mlflow.pyfunc.load_model`; the fitted preprocessing
is pickled with it and the network is a native `.keras` file, which any Keras 3 backend loads: so it needs only its
folder and an environment with Keras on either backend (torch in Azure's, JAX on this machine's).
"""

from __future__ import annotations

import importlib.util
import os

import mlflow.pyfunc
import numpy as np
import pandas as pd


# the Keras backends the platform runs on: JAX where the project's lock installs (PyPI ships it for the CPU only),
# torch in the Azure ML environments (CUDA on the GPU cluster, the CPU build for serving)
BACKENDS = ("jax", "torch")


def choose_backend() -> str:
    """KERAS_BACKEND as set, else the first of BACKENDS installed; call it before Keras is imported."""
    if not os.environ.get("KERAS_BACKEND"):
        os.environ["KERAS_BACKEND"] = next((name for name in BACKENDS if importlib.util.find_spec(name)), BACKENDS[-1])
    return os.environ["KERAS_BACKEND"]


class KerasRegressor(mlflow.pyfunc.PythonModel):
    def __init__(self, features, log_target: bool, mean: float, scale: float):
        self.features = features  # the fitted tabular.preprocessor(scale=True)
        self.log_target = log_target
        self.mean = mean
        self.scale = scale
        self.network = None

    @classmethod
    def for_target(cls, features, target) -> "KerasRegressor":
        """Fit the target scaling: log for non-negative (skewed) amounts, then standardize."""
        values = np.asarray(target, dtype="float64")
        log_target = bool(values.min() >= 0)
        values = np.log1p(values) if log_target else values
        return cls(features, log_target, float(values.mean()), float(values.std()) or 1.0)

    def __getstate__(self):
        return {**self.__dict__, "network": None}  # the network travels as its own artifact

    def load_context(self, context) -> None:
        choose_backend()
        import keras

        self.network = keras.saving.load_model(context.artifacts["network"], compile=False)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        inputs = np.asarray(self.features.transform(model_input), dtype="float32")
        return self.from_network(np.asarray(self.network.predict_on_batch(inputs)))

    def from_network(self, outputs: np.ndarray) -> np.ndarray:
        """The network's standardized outputs -> predictions in the target's units."""
        values = outputs.reshape(-1).astype("float64") * self.scale + self.mean
        return np.expm1(values) if self.log_target else values

    def to_network(self, target) -> np.ndarray:
        values = np.asarray(target, dtype="float64")
        values = np.log1p(values) if self.log_target else values
        return ((values - self.mean) / self.scale).astype("float32")
