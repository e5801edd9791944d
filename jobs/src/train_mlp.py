"""Train a Keras 3 MLP (two hidden layers) for regression on any tabular CSV: the sweep job's trial.

    python train_mlp.py --data CSV --target COLUMN --output DIR [--batch-size N --epochs N
                        --units-1 N --units-2 N --learning-rate X]

Same split, features and metrics as train.py (tabular.py). Logs the held-out MAE every epoch (step =
epoch), so a sweep's early termination policy can act, then the final held-out metrics. Writes
DIR/model (an MLflow pyfunc model over the raw columns), DIR/metrics.json and DIR/plots/. Keras runs on
the backend installed (keras_model.choose_backend): JAX on the CPU here, PyTorch with CUDA on the GPU cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras_model

if keras_model.choose_backend() == "jax":
    # one CPU thread (see use_one_cpu_thread): XLA reads its flags when JAX starts
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import keras  # noqa: E402  (after the backend is chosen)
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

import tabular  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True, help="the numeric column to predict")
    parser.add_argument("--output", required=True, type=Path, help="folder for the model, metrics and plots")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--units-1", type=int, default=128, help="units of the first hidden layer")
    parser.add_argument("--units-2", type=int, default=64, help="units of the second hidden layer")
    parser.add_argument("--learning-rate", type=float, default=0.004, help="peak rate; decays to zero (cosine)")
    return parser.parse_args(argv)


def build_network(inputs: int, args: argparse.Namespace, steps: int) -> keras.Model:
    network = keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(args.units_1, activation="relu"),
            keras.layers.Dense(args.units_2, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps)
    network.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    return network


class HeldOutMAE(keras.callbacks.Callback):
    """Logs MAE on the held-out rows, in the target's units, after every epoch."""

    def __init__(self, model: keras_model.KerasRegressor, x_test: np.ndarray, y_test: np.ndarray):
        super().__init__()
        self.wrapper, self.x_test, self.y_test = model, x_test, y_test

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        predictions = self.wrapper.from_network(self.model.predict(self.x_test, batch_size=4096, verbose=0))
        mae = float(np.mean(np.abs(predictions - self.y_test)))
        mlflow.log_metric("MAE", mae, step=epoch + 1)
        print(f"epoch {epoch + 1}: MAE={mae:.6g} loss={(logs or {}).get('loss', float('nan')):.4g}", flush=True)


def permutation_importance(model: keras_model.KerasRegressor, x_test, y_test, mae: float) -> dict[str, float]:
    """Increase of held-out MAE when one raw column's values are shuffled."""
    rng = np.random.default_rng(tabular.SEED)
    increase = {}
    for column in x_test.columns:
        shuffled = x_test.assign(**{column: rng.permutation(x_test[column].to_numpy())})
        increase[column] = float(np.mean(np.abs(model.predict(None, shuffled) - y_test))) - mae
    return increase


def use_one_cpu_thread() -> None:
    """On CPU, train on one thread: a network this small gains nothing from more, and threads that spin
    waiting for a busy core (the local run trains LightGBM beside it) make epochs several times slower. JAX gets
    the same from its XLA flags, which the module sets before JAX starts."""
    if keras.backend.backend() == "torch":
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    use_one_cpu_thread()
    keras.utils.set_random_seed(tabular.SEED)
    frame = tabular.read_table(args.data)
    x_train, x_test, y_train, y_test = tabular.split(frame, args.target, "regression")
    features = tabular.preprocessor(scale=True)
    train_inputs = np.asarray(features.fit_transform(x_train, y_train), dtype="float32")
    test_inputs = np.asarray(features.transform(x_test), dtype="float32")
    model = keras_model.KerasRegressor.for_target(features, y_train)
    steps = args.epochs * -(-len(train_inputs) // args.batch_size)
    network = build_network(train_inputs.shape[1], args, steps)
    y_test = y_test.to_numpy(dtype="float64")

    with mlflow.start_run():
        mlflow.log_params(
            {
                "task": "regression",
                "target": args.target,
                "model": "keras-mlp",
                "backend": keras.backend.backend(),
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "units_1": args.units_1,
                "units_2": args.units_2,
                "learning_rate": args.learning_rate,
                "log_target": model.log_target,
                "train_rows": len(x_train),
                "test_rows": len(x_test),
            }
        )
        started = time.perf_counter()
        network.fit(
            train_inputs,
            model.to_network(y_train),
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=0,
            callbacks=[HeldOutMAE(model, test_inputs, y_test)],
        )
        mlflow.log_metric("training_seconds", time.perf_counter() - started)
        model.network = network
        predictions = model.predict(None, x_test)
        metrics = tabular.regression_metrics(y_test, predictions)
        # MAE of the final epoch is already logged, at its step
        mlflow.log_metrics({name: value for name, value in metrics.items() if name != "MAE"}, step=args.epochs)

        tabular.write_results(args.output, metrics)
        plots = args.output / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        tabular.plot_predictions(y_test, predictions, plots / "predicted_vs_actual.png")
        importance = permutation_importance(model, x_test, y_test, metrics["MAE"])
        tabular.plot_importance(
            list(importance), list(importance.values()), plots / "feature_importance.png", "held-out MAE increase"
        )
        save(model, network, x_train.head(5), args.output / "model", args.target)
        mlflow.log_artifacts(str(args.output))
    print(" ".join(f"{name}={value:.6g}" for name, value in metrics.items()))
    return metrics


def save(model: keras_model.KerasRegressor, network: keras.Model, example, path: Path, target: str) -> None:
    shutil.rmtree(path, ignore_errors=True)  # a rerun replaces its model
    with tempfile.TemporaryDirectory() as scratch:
        network_file = Path(scratch) / "network.keras"
        network.save(network_file)
        mlflow.pyfunc.save_model(
            path,
            python_model=model,
            artifacts={"network": str(network_file)},
            signature=infer_signature(example, model.predict(None, example)),
            input_example=example,
            metadata=tabular.model_metadata("regression", target=target),
            code_paths=[tabular.__file__, keras_model.__file__],
            pip_requirements=tabular.pinned(
                "mlflow", "keras", keras.backend.backend(), "scikit-learn", "pandas", "numpy", "cloudpickle"
            ),
        )


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data or arguments: the message says which
        sys.exit(f"train_mlp.py: error: {error}")
