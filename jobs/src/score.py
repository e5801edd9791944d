"""Scoring script for the online endpoints, in Azure ML and on the local target.

The Azure ML inference server (azmlinfsrv) imports this file, calls init() once per worker, then run()
once per request with the request's `data`:

    POST /score  {"data": [{"longitude": -122.23, ..., "ocean_proximity": "NEAR BAY"}, ...]}
    -> [452600.0, ...]                      a regressor: one prediction per record, in order
    -> [{"label": "no", "probability": 0.07}, ...]
                                            a two-class classifier: the predicted label and the probability
                                            of the positive class (the second of the model's classes, "yes")
    -> [{"label": "b", "probabilities": {"a": 0.1, "b": 0.7, "c": 0.2}}, ...]
                                            a classifier of more classes: every class's probability

The columns, their types and the Swagger example come from the model's MLflow signature and input
example; a classifier's classes from the model's metadata (`task`, `classes`, which train.py and
automl.py write). So this script serves any tabular model the training scripts save. Bad input gets a
400 that names the problem; the server answers the JSON-level cases itself (body not JSON, no `data`).

Data collection: where the deployment collects (Azure: the deployment's `data_collector`, which sets
AZUREML_MDC_CONFIG_PATH; locally: jobs/local/collector.py), run() logs each request's records to the
`model_inputs` collection and its answers to `model_outputs`, with azureml.ai.monitoring's Collector
(learn.microsoft.com/azure/machine-learning/how-to-collect-production-data). The outputs' columns: the
prediction under the model's target column (`prediction` for a regressor, `label` for a classifier, where the
model's metadata has no `target`), then a two-class classifier's `probability` of the positive class, or
`probability_<class>` for each class. run() only buffers the request's arrays; a thread per worker sends
what arrived within half a second as one batch, one inputs object and one outputs object that share a
correlation id, row i of one matching row i of the other (scoring.DataCollection). Collection never fails
a request.

Hot path: for a scikit-learn model, requests skip pandas and sklearn's per-call validation where that
is proven to give the same numbers (see `FastPipeline` in scoring.py, which batch_score.py shares);
anything else goes through the model's own predict.
"""

from __future__ import annotations

import os

from azureml_inference_server_http.api.aml_response import AMLResponse
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema
from scoring import BadRequest, DataCollection, Schema, Scorer, find_model_folder, log

if not os.environ.get("AZUREML_MODEL_DIR"):
    raise RuntimeError("AZUREML_MODEL_DIR is not set: it must point at the folder holding the MLflow model")
_model_folder = find_model_folder(os.environ["AZUREML_MODEL_DIR"])
_schema = Schema(_model_folder)
_scorer: Scorer | None = None
_collection: DataCollection | None = None  # None: collection is off


def init() -> None:
    global _scorer, _collection
    _scorer = Scorer(_model_folder, _schema)
    log.info("model loaded from %s; columns: %s", _model_folder, ", ".join(_schema.columns))
    _collection = DataCollection.start()


# convert_to_provided_type=False: the decorators describe the request for the Swagger; run() checks it,
# so that a wrong value is a 400 naming the record and column, not inference-schema's 500
@input_schema("data", StandardPythonParameterType([_schema.example]), convert_to_provided_type=False)
@output_schema(StandardPythonParameterType(_schema.answer_example()))
def run(data):
    try:
        columns = _schema.to_columns(data)
    except BadRequest as problem:
        return AMLResponse({"message": str(problem)}, 400, json_str=True)
    if _collection is None:
        return _scorer.predict(columns)
    scores, labels = _scorer.scored(columns)
    answer = _scorer.answer(scores, labels)
    _collection.collect(columns, _scorer, scores, labels)  # buffered: the flush thread sends batches
    return answer
