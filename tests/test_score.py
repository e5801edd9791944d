"""score.py served by the real Azure ML inference server (azmlinfsrv) on 127.0.0.1, over a model that
train.py trains on small generated housing data: predictions, every malformed request, the Swagger."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest

from jobs.local.server import LocalServer
from tests.bank_sample import bank_frame, bank_records
from tests.housing_sample import housing_frame, request_records
from tests.mlflow_store import private_mlflow_store

SRC = Path(__file__).resolve().parents[1] / "jobs" / "src"
MAX_ROWS = 50


def trained_root(work: Path, frame, target: str, task: str, model_name: str) -> Path:
    """AZUREML_MODEL_DIR as Azure ML lays it out: <root>/<name>/<version>/model/MLmodel, from train.py
    (in-process: the test already imports what it needs)."""
    sys.path.insert(0, str(SRC))
    import train

    data = work / "data.csv"
    frame.to_csv(data, index=False, sep=";")
    with private_mlflow_store(work / "mlruns"):
        train.main(["--data", str(data), "--target", target, "--task", task,
                    "--output", str(work / model_name / "1"), "--n-estimators", "40"])  # fmt: skip
    return work


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return trained_root(tmp_path_factory.mktemp("score"), housing_frame(400), "median_house_value", "regression",
                        "housing-regressor")  # fmt: skip


def serving(root: Path, logs: Path):
    """A server for the trained root (a fixture's body): score.py under azmlinfsrv, one worker, rows capped at
    MAX_ROWS (the server process inherits SCORE_MAX_ROWS)."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SCORE_MAX_ROWS", str(MAX_ROWS))
        running = LocalServer(root, 0, logs / "server.log", workers=1).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    yield from serving(model_root, tmp_path_factory.mktemp("logs"))


def post(server, body: bytes | str, content_type: str = "application/json") -> tuple[int, object]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(server.url + "/score", data, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_predictions_equal_the_pipelines_own_predict(server, model_root):
    records = request_records(MAX_ROWS)  # includes missing numbers, a missing and an unseen category
    status, predictions = post(server, json.dumps({"data": records}))
    assert status == 200
    pipeline = mlflow.sklearn.load_model(str(model_root / "housing-regressor" / "1" / "model"))
    expected = pipeline.predict(pd.DataFrame(records).astype({"ocean_proximity": "str"}))
    assert len(predictions) == len(records)
    assert predictions == expected.tolist()  # exactly: the fast path computes the same numbers
    # one record at a time too (the hot path of the benchmark)
    assert post(server, json.dumps({"data": records[:1]})) == (200, expected[:1].tolist())


MALFORMED = {
    "bad JSON": ("{'data': [", "could not be decoded as JSON"),
    "no data": ('{"rows": []}', "'data'"),
    "data not a list": ('{"data": {"longitude": 1}}', "'data' must be a list of records"),
    "empty list": ('{"data": []}', "'data' is empty"),
    "record not an object": ('{"data": [[1, 2]]}', "record 0 must be an object"),
    "too many rows": (json.dumps({"data": request_records(MAX_ROWS + 1)}), f"the limit is {MAX_ROWS}"),
}


def _with(change) -> str:
    records = request_records(3)
    change(records[1])
    return json.dumps({"data": records})


MALFORMED |= {
    "missing column": (_with(lambda r: r.pop("ocean_proximity")), "record 1: missing column(s) ocean_proximity"),
    "unknown column": (_with(lambda r: r.update(colour="blue")), "record 1: unknown column(s) colour"),
    "wrong type: string for a number": (
        _with(lambda r: r.update(median_income="high")),
        "record 1, column 'median_income': expected a number or null, got a string 'high'",
    ),
    "wrong type: boolean for a number": (
        _with(lambda r: r.update(households=True)),
        "record 1, column 'households': expected a number or null, got a boolean True",
    ),
    "wrong type: number for a category": (
        _with(lambda r: r.update(ocean_proximity=3)),
        "record 1, column 'ocean_proximity': expected a string or null, got a number 3",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_get_400_naming_the_problem_and_the_server_stays_up(server, case):
    body, message = MALFORMED[case]
    status, answer = post(server, body)
    assert status == 400, answer
    assert message in answer["message"]
    assert post(server, json.dumps({"data": request_records(1)}))[0] == 200


def test_a_body_that_is_not_json_content_gets_415(server):
    status, answer = post(server, "data=1", content_type="text/plain")
    assert status == 415 and "application/json" in answer["message"]


def test_swagger_describes_the_models_columns_with_an_example(server):
    with urllib.request.urlopen(server.url + "/swagger.json", timeout=10) as answer:
        swagger = json.loads(answer.read())
    request = swagger["definitions"]["ServiceInput"]
    record = request["properties"]["data"]["items"]
    columns = list(housing_frame(1).drop(columns="median_house_value").columns)
    assert sorted(record["properties"]) == sorted(columns)
    assert record["properties"]["median_income"]["type"] == "number"
    assert record["properties"]["ocean_proximity"]["type"] == "string"
    example = request["example"]["data"]
    assert sorted(example[0]) == sorted(columns)
    assert post(server, json.dumps({"data": example}))[0] == 200  # the example is a valid request
    assert swagger["definitions"]["ServiceOutput"]["items"]["type"] == "number"


# -- a classifier: the label and the positive class's probability ---------------------------------------------
@pytest.fixture(scope="module")
def classifier_root(tmp_path_factory) -> Path:
    return trained_root(tmp_path_factory.mktemp("classifier"), bank_frame(600), "y", "classification",
                        "bank-marketing-classifier")  # fmt: skip


@pytest.fixture(scope="module")
def classifier(classifier_root, tmp_path_factory):
    yield from serving(classifier_root, tmp_path_factory.mktemp("logs"))


def test_a_classifier_answers_the_label_and_the_positive_class_probability(classifier, classifier_root):
    records = bank_records(40)
    status, answers = post(classifier, json.dumps({"data": records}))
    assert status == 200, answers
    pipeline = mlflow.sklearn.load_model(str(classifier_root / "bank-marketing-classifier" / "1" / "model"))
    frame = pd.DataFrame(records)
    assert list(pipeline.classes_) == ["no", "yes"]
    assert [answer["label"] for answer in answers] == pipeline.predict(frame).tolist()
    assert [answer["probability"] for answer in answers] == pipeline.predict_proba(frame)[:, 1].tolist()
    assert {answer["label"] for answer in answers} <= {"no", "yes"}


def test_a_classifier_refuses_malformed_requests_and_stays_up(classifier):
    bad = bank_records(2)
    bad[1]["duration"] = "long"
    status, answer = post(classifier, json.dumps({"data": bad}))
    assert status == 400 and "record 1, column 'duration': expected a number or null, got a string 'long'" in answer["message"]
    assert post(classifier, json.dumps({"data": [{"age": 30.0}]}))[0] == 400
    assert post(classifier, json.dumps({"data": bank_records(1)}))[0] == 200


def test_the_classifiers_swagger_describes_its_answer(classifier):
    with urllib.request.urlopen(classifier.url + "/swagger.json", timeout=10) as answer:
        swagger = json.loads(answer.read())
    answers = swagger["definitions"]["ServiceOutput"]
    assert answers["type"] == "array"
    assert set(answers["items"]["properties"]) == {"label", "probability"}
    assert answers["items"]["properties"]["probability"]["type"] == "number"
    assert answers["items"]["properties"]["label"]["type"] == "string"
    # the model's metadata names its classes, so the example answer names the positive one
    assert [answer["label"] for answer in answers["example"]] == ["yes"]


# -- a pickled model, as Azure AutoML saves its own (served in its own environment: jobs/azure/assets.py) ------
@pytest.fixture(scope="module")
def pickled_root(tmp_path_factory) -> Path:
    """A scikit-learn pipeline saved with cloudpickle, without the metadata the training scripts write."""
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    frame = bank_frame(400)
    target, features = frame.pop("y"), frame.astype(dict.fromkeys(frame.select_dtypes("number").columns, float))
    categorical = list(features.select_dtypes(exclude="number").columns)
    encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), categorical)], remainder="passthrough")
    pipeline = make_pipeline(encode, DecisionTreeClassifier(max_depth=5, random_state=0)).fit(features, target)
    root = tmp_path_factory.mktemp("pickled")
    # its requirements given: MLflow would otherwise infer them by loading the model in a process of its own
    mlflow.sklearn.save_model(pipeline, root / "automl-classifier" / "1" / "model", serialization_format="cloudpickle",
                              signature=infer_signature(features, pipeline.predict(features)), input_example=features.head(2),
                              pip_requirements=["scikit-learn"])  # fmt: skip
    return root


def test_a_pickled_classifier_without_metadata_answers_as_a_classifier_and_skops_is_never_imported(pickled_root):
    folder = pickled_root / "automl-classifier" / "1" / "model"
    records = bank_records(30)
    # in a fresh process, as a server worker: a model that is not skops-serialized does not need skops installed
    script = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(SRC)!r})
from scoring import Schema, Scorer
folder = Path({str(folder)!r})
schema = Schema(folder)
answers = Scorer(folder, schema).predict(schema.to_columns({records!r}))
print(json.dumps({{"skops": [name for name in sys.modules if name.startswith("skops")], "answers": answers}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["skops"] == []
    pipeline = mlflow.sklearn.load_model(str(folder))
    frame = pd.DataFrame(records)
    assert [answer["label"] for answer in result["answers"]] == pipeline.predict(frame).tolist()
    assert [answer["probability"] for answer in result["answers"]] == pipeline.predict_proba(frame)[:, 1].tolist()
