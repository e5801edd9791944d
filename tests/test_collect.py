"""Data collection of an online deployment's inputs and outputs: score.py under the real inference server
(azmlinfsrv) logs them with azureml-ai-monitoring's Collector, and jobs/local/collector.py, the local stand-in
for Azure's data collector sidecar, writes them in Azure's layout and schema (how-to-collect-production-data).
Models come from train.py on small generated bank marketing data (tests/test_score.py's helper)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.local.collector import Collection, CollectorError, LocalCollector, purge
from jobs.local.server import LocalServer
from tests.bank_sample import bank_frame, bank_records
from tests.housing_sample import housing_frame
from tests.test_score import SRC, post, trained_root

MODEL = "bank-marketing-classifier"
# Azure's line schema (the docs' example), in its order
FIELDS = ["specversion", "id", "source", "type", "datacontenttype", "time", "data", "correlationid", "xrequestid",
          "modelversion", "collectdatatype", "agent", "contentrange"]  # fmt: skip
# the client writes the DataFrames with pandas' to_json, whose floats keep 10 decimals
DECIMALS = 1e-9


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return trained_root(tmp_path_factory.mktemp("collect"), bank_frame(300), "y", "classification", MODEL)


@pytest.fixture(scope="module")
def servers(model_root, tmp_path_factory):
    """Four servers of the same model, started at once: collecting (sampling 1.0), sampling 0, collection off
    (no collector's environment), and one whose collector is closed once it started, before any request. A
    test that stops a server (to see what it sends at exit) is the only one that uses it."""
    root = tmp_path_factory.mktemp("collected")
    logs = tmp_path_factory.mktemp("logs")
    collecting = LocalCollector(Collection(root, "local-bank", "blue")).start()
    never = LocalCollector(Collection(root, "local-bank", "green", sampling_rate=0)).start()
    gone = LocalCollector(Collection(root, "local-gone", "blue")).start()
    made = {
        "on": LocalServer(model_root, 0, logs / "on.log", 1, collector=collecting),
        "sampling 0": LocalServer(model_root, 0, logs / "sampling0.log", 1, collector=never),
        "off": LocalServer(model_root, 0, logs / "off.log", 1),
        "unreachable": LocalServer(model_root, 0, logs / "unreachable.log", 1, collector=gone),
    }
    problems = []

    def start(server):
        try:
            server.start()
        except BaseException as error:  # noqa: BLE001  (reported below, after every start ended)
            problems.append(error)

    at_once(start, made.values())
    gone.close()  # its port closes: the server's client cannot reach it
    try:
        assert not problems, problems
        yield {**made, "collector": collecting, "never": never, "root": root}
    finally:
        at_once(LocalServer.stop, made.values())
        collecting.close()
        never.close()


def at_once(action, servers) -> None:
    threads = [threading.Thread(target=action, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def requests_(seed: int = 1, count: int = 5) -> list[list[dict]]:
    """`count` requests of 1 to 5 records (distinct records of the seed, 3 per request on average), two records
    with nulls."""
    sizes = [(1, 3, 5, 2, 4)[i % 5] for i in range(count)]
    records = bank_records(sum(sizes), seed)
    records[0]["balance"] = None
    records[4]["job"] = None
    batches, start = [], 0
    for size in sizes:
        batches.append(records[start : start + size])
        start += size
    return batches


def answered(server, batches: list[list[dict]]) -> list[list]:
    answers = []
    for batch in batches:
        status, answer = post(server, json.dumps({"data": batch}))
        assert status == 200, answer
        answers.append(answer)
    return answers


def lines(collector: LocalCollector, collection: str) -> list[tuple[Path, dict]]:
    return [(path, json.loads(line)) for path in collector.files(collection) for line in path.read_text().splitlines()]


def key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def test_inputs_and_outputs_land_in_azures_layout_and_schema_in_batches(servers):
    """Two bursts: the first lands while the server runs (its flush thread), the second is still buffered when
    the server stops (the exit flush). Several requests share one object; the rows are the records sent and the
    answers given, row i of a batch's inputs matching row i of its outputs (one correlation id)."""
    server, collector = servers["on"], servers["collector"]
    running, stopping = requests_(seed=7, count=20), requests_(seed=8, count=5)  # records no other test sends
    started = time.time()
    answers = answered(server, running)
    assert answers == answered(servers["off"], running)  # collecting changes no answer
    for name in ("model_inputs", "model_outputs"):
        collector.wait_for_rows(name, sum(map(len, running)), timeout_s=20)
    answers += answered(server, stopping)
    ended = time.time()
    server.stop()  # what it still buffers, it collects and sends before its worker exits: no waiting after
    sent = running + stopping
    rows = sum(map(len, sent))

    found = {}
    for collection in ("model_inputs", "model_outputs"):
        files = collector.files(collection)
        assert 1 <= len(files) <= 2  # one file per collection per hour per instance (two: the hour turned)
        objects = lines(collector, collection)
        assert len(objects) == collector.written(collection).objects
        assert sum(len(line["data"]) for _, line in objects) == collector.written(collection).rows == rows
        for path, line in objects:
            endpoint, deployment, name, *hour, file = path.relative_to(servers["root"]).parts
            assert (endpoint, deployment, name, file) == ("local-bank", "blue", collection, f"{collector.instance_id}.jsonl")
            assert list(line) == FIELDS
            moment = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            assert moment.strftime("%Y/%m/%d/%H") == "/".join(hour)
            assert int(started) <= moment.timestamp() <= ended  # the batch's first request's time
            assert line["specversion"] == "1.0" and line["type"] == f"azureml.inference.{collection}"
            assert line["source"] == "/local/onlineEndpoints/local-bank/deployments/blue"
            assert line["datacontenttype"] == "application/json" and line["modelversion"] == "default"
            assert line["collectdatatype"].startswith("pandas") and line["collectdatatype"].endswith("DataFrame")
            assert line["agent"].startswith("azureml-ai-monitoring/")
            assert line["correlationid"] == line["xrequestid"] and len(line["id"]) == 36
            size = len(json.dumps(line["data"], separators=(",", ":")).encode())
            assert line["contentrange"] == f"bytes 0-{size - 1}/{size}"  # the client's body: to_json's compact JSON
        found[collection] = {line["correlationid"]: line["data"] for _, line in objects}
        assert len(found[collection]) == len(objects)  # one object per batch and collection

    inputs, outputs = found["model_inputs"], found["model_outputs"]
    # batching: fewer objects than requests (20 in well under a second, then 5 more)
    assert len(inputs) < len(sent)
    # the inputs rows are the records sent, each once, values, columns and nulls as sent
    collected_rows = sorted(key(row) for data in inputs.values() for row in data)
    assert collected_rows == sorted(key(record) for batch in sent for record in batch)
    # each batch's outputs object has its inputs object's correlation id, and row i answers the inputs' row i
    assert set(inputs) == set(outputs)
    answer_of = {key(record): answer for batch, given in zip(sent, answers) for record, answer in zip(batch, given)}
    for correlation, data in inputs.items():
        collected = outputs[correlation]
        assert len(collected) == len(data)
        assert [list(row) for row in collected] == [["y", "probability"]] * len(data)  # the target's name
        expected = [answer_of[key(row)] for row in data]
        assert [row["y"] for row in collected] == [a["label"] for a in expected]
        probabilities = [a["probability"] for a in expected]
        assert [row["probability"] for row in collected] == pytest.approx(probabilities, abs=DECIMALS)
    assert "data collection failed" not in server.log_path.read_text()


def test_sampling_0_collects_nothing_and_answers(servers):
    server = servers["sampling 0"]
    batches = requests_()
    assert answered(server, batches) == answered(servers["off"], batches)
    server.stop()  # its buffer is flushed at exit: whatever the client kept, it has sent
    never = servers["never"]
    assert never.written("model_inputs").objects == never.written("model_outputs").objects == 0
    assert not any(never.settings.folder.rglob("*.jsonl"))
    log = server.log_path.read_text()
    assert "mdc collection model_inputs <enabled:True,sample_percentage:0>" in log
    assert "data collection failed" not in log


def test_collection_off_answers_and_collects_nothing(servers):
    answered(servers["off"], requests_())  # every one a 200 (equal to the collecting servers': the tests above)
    log = servers["off"].log_path.read_text()
    assert "data collection is off: AZUREML_MDC_CONFIG_PATH and AZUREML_MDC_ENABLED are not set" in log
    assert "mdc" not in {line.split(" | ")[1] for line in log.splitlines() if line.count(" | ") >= 3}
    assert "data collection is on: model_inputs, model_outputs" in servers["on"].log_path.read_text()


def test_an_unreachable_collector_fails_no_request_and_the_failures_are_counted(servers):
    server = servers["unreachable"]
    batches = requests_()
    assert answered(server, batches) == answered(servers["off"], batches)
    deadline = time.monotonic() + 15  # the flush thread hands the batch to the client within FLUSH_INTERVAL_S
    while "data collection failed" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log_path.read_text()
    assert "data collection failed (the request is answered all the same): mdc.worker:" in log
    assert "Connection refused" in log
    assert not any((servers["root"] / "local-gone").rglob("*.jsonl"))


# -- score.py's side in process: collection never fails a request; the output columns' names --------------------
def _scoring():
    sys.path.insert(0, str(SRC))
    import scoring

    return scoring


class Answers:  # Scorer's output_columns
    def output_columns(self, scores, labels):
        return {"y": labels, "probability": scores}


def test_requests_are_buffered_then_collected_as_one_batch_with_one_context(monkeypatch):
    import numpy as np

    scoring = _scoring()
    monkeypatch.setattr(scoring, "_failures", 0)
    clock = iter([1_700_000_000.7, 1_700_000_003.2, 1_700_000_004.9, 1_700_000_009.5])
    monkeypatch.setattr(scoring, "time", SimpleNamespace(time=lambda: next(clock)))
    collected = []

    class Recording:  # azureml.ai.monitoring.Collector's interface
        def __init__(self, name, on_error):
            self.name = name

        def collect(self, frame, context=None):
            collected.append((self.name, frame, context))
            return context

    collection = scoring.DataCollection(Recording)
    collection._starting = None
    sizes = (1, 3, 2)
    for request, size in enumerate(sizes):
        ages = np.arange(size, dtype=float) + 10 * request
        columns = {"age": ages, "job": np.array([f"job {request}"] * size, dtype=object)}
        labels = np.array(["yes" if age % 2 else "no" for age in ages], dtype=object)
        collection.collect(columns, Answers(), ages / 100, labels)
    assert collected == []  # nothing on the request's thread
    assert collection.flush() == sum(sizes)
    (_, inputs, context), (_, outputs, same) = collected
    assert [name for name, *_ in collected] == ["model_inputs", "model_outputs"]
    assert context is same and context.get_timestamp() == 1_700_000_000  # the first request's, in whole seconds
    assert len(context.get_id()) == 36
    assert list(inputs.columns) == ["age", "job"] and list(outputs.columns) == ["y", "probability"]
    assert inputs["age"].tolist() == [0.0, 10.0, 11.0, 12.0, 20.0, 21.0]  # the requests' rows, in order
    assert inputs["job"].tolist() == ["job 0"] + ["job 1"] * 3 + ["job 2"] * 2
    assert outputs["probability"].tolist() == (inputs["age"] / 100).tolist()  # row i answers row i
    assert outputs["y"].tolist() == ["no", "no", "yes", "no", "no", "yes"]
    assert collection.flush() == 0 and len(collected) == 2  # an empty buffer collects nothing

    # a buffer of FLUSH_ROWS rows wakes the flush thread; close() (at exit) flushes what is left
    assert not collection._wake.is_set()
    many = np.zeros(scoring.FLUSH_ROWS)
    collection.collect({"age": many, "job": many.astype(object)}, Answers(), many, many.astype(object))
    assert collection._wake.is_set()
    collection.close()
    assert [len(frame) for _, frame, _ in collected[2:]] == [scoring.FLUSH_ROWS] * 2
    assert collected[2][2].get_timestamp() == 1_700_000_009
    assert scoring.collection_failures() == 0


def test_the_flush_thread_collects_every_interval_and_the_exit_flush_the_rest(monkeypatch):
    import numpy as np

    scoring = _scoring()
    monkeypatch.setattr(scoring, "FLUSH_INTERVAL_S", 0.05)
    batches = []
    arrived = threading.Event()

    class Recording:
        def __init__(self, name, on_error):
            self.name = name

        def collect(self, frame, context=None):
            if self.name == "model_outputs":
                batches.append(len(frame))
                arrived.set()

    collection = scoring.DataCollection(Recording)
    collection._starting = None
    monkeypatch.setattr(scoring, "_started", [collection])
    thread = threading.Thread(target=collection._flush_every_interval, daemon=True)
    thread.start()
    one = {"age": np.array([1.0]), "job": np.array(["x"], dtype=object)}
    collection.collect(one, Answers(), np.array([0.5]), np.array(["no"], dtype=object))
    assert arrived.wait(10)  # no one asked: the thread's interval
    for _ in range(3):  # buffered, then collected at exit before the thread's next turn could
        collection.collect(one, Answers(), np.array([0.5]), np.array(["no"], dtype=object))
    scoring._flush_at_exit()  # the client's teardown returns at once here: it never started
    thread.join(10)
    assert not thread.is_alive()
    assert sum(batches) == 4 and batches[0] == 1


def test_a_collect_that_raises_or_calls_on_error_is_counted_and_logged_not_raised(caplog, monkeypatch):
    import numpy as np

    scoring = _scoring()
    monkeypatch.setattr(scoring, "_failures", 0)

    class Refusing:  # azureml.ai.monitoring.Collector's interface
        def __init__(self, name, on_error):
            self.name, self.on_error = name, on_error

        def collect(self, frame, context=None):
            assert context is not None
            if self.name == "model_inputs":
                raise RuntimeError("the queue is on fire")
            self.on_error(Exception("Too many requests lead to message queue is full"))

    class Broken:  # a Scorer whose output_columns fails
        def output_columns(self, scores, labels):
            raise KeyError("no such output")

    collection = scoring.DataCollection(Refusing)
    collection._starting = None
    columns = {"age": np.array([30.0]), "job": np.array(["admin."], dtype=object)}
    with caplog.at_level("ERROR", logger="azmlinfsrv.score"):
        for _ in range(scoring.FAILURE_LOG_EVERY):
            collection.collect(columns, Answers(), np.array([0.2]), np.array(["no"], dtype=object))
            assert collection.flush() == 1  # inputs raised, outputs called on_error: both counted
        assert scoring.collection_failures() == 2 * scoring.FAILURE_LOG_EVERY
        collection.collect(columns, Broken(), np.array([0.2]), None)  # counted, not raised, nothing buffered
        assert collection.flush() == 0
        # a batch whose frames cannot be built (columns of different lengths) is counted and dropped
        collection.collect({"age": np.array([1.0, 2.0]), "job": np.array(["a"], dtype=object)}, Answers(),
                           np.array([0.2]), np.array(["no"], dtype=object))  # fmt: skip
        assert collection.flush() == 0
    assert scoring.collection_failures() == 2 * scoring.FAILURE_LOG_EVERY + 2
    assert [record.getMessage() for record in caplog.records] == [  # the first, then every 100th
        "data collection failed (the request is answered all the same): the queue is on fire",
        "data collection failed 100 times so far (the requests are answered all the same); latest: "
        "Too many requests lead to message queue is full",
        "data collection failed 200 times so far (the requests are answered all the same); latest: "
        "Too many requests lead to message queue is full",
    ]


def test_output_columns_carry_the_target_or_the_documented_fallbacks(model_root, tmp_path):
    import yaml

    scoring = _scoring()
    (tmp_path / "three").mkdir()
    (tmp_path / "regressor").mkdir()
    three = trained_root(tmp_path / "three", bank_frame(200), "marital", "classification", "marital")
    regressor = trained_root(tmp_path / "regressor", housing_frame(120), "median_house_value", "regression", "housing")
    records = [record | {"y": "no"} for record in bank_records(4)]
    cases = {
        (model_root, MODEL): ["y", "probability"],
        (three, "marital"): ["marital", "probability_divorced", "probability_married", "probability_single"],
        (regressor, "housing"): ["median_house_value"],
    }
    for (root, name), expected in cases.items():
        folder = root / name / "1" / "model"
        schema = scoring.Schema(folder)
        scorer = scoring.Scorer(folder, schema)
        if name == "housing":
            rows = housing_frame(4, seed=3).drop(columns="median_house_value").to_dict(orient="records")
        else:
            rows = [{column: record[column] for column in schema.columns} for record in records]
        scores, labels = scorer.scored(schema.to_columns(rows))
        outputs = scorer.output_columns(scores, labels)
        assert list(outputs) == expected and all(len(values) == 4 for values in outputs.values())
        answer = scorer.answer(scores, labels)  # the outputs are the answer's own arrays
        assert list(outputs[expected[0]]) == ([a["label"] for a in answer] if labels is not None else answer)
    # a model saved before the metadata named its target: `prediction` / `label`
    for root, name, fallback in ((regressor, "housing", "prediction"), (model_root, MODEL, "label")):
        folder = root / name / "1" / "model"
        mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
        assert mlmodel["metadata"].pop("target") in ("median_house_value", "y")
        old = tmp_path / f"old-{name}"
        old.mkdir()
        for item in folder.iterdir():
            if item.name != "MLmodel":
                (old / item.name).symlink_to(item)
        (old / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        assert scoring.Scorer(old, scoring.Schema(old)).output_names[0] == fallback


def test_collection_is_off_where_the_client_is_missing_or_a_collection_is_disabled(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"collections": {"model_inputs": {"enabled": True}, "model_outputs": {"enabled": False}}}))
    script = f"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
sys.path.insert(0, {str(SRC)!r})
import scoring
if sys.argv[1] == "missing":
    sys.modules["azureml.ai.monitoring"] = None  # `import` raises ImportError, as where it is not installed
print("started:", scoring.DataCollection.start())
"""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AZUREML_MDC_")}
    outputs = {}
    cases = {"missing": {"AZUREML_MDC_ENABLED": "true"}, "disabled": {"AZUREML_MDC_CONFIG_PATH": str(config)}}
    for case, extra in cases.items():
        done = subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True, timeout=60,
                              env={**environment, **extra})  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[case] = done.stdout
    assert "data collection is off: the data collector's client (azureml-ai-monitoring) is missing" in outputs["missing"]
    assert "data collection is off: collection model_outputs is not enabled, drop the data" in outputs["disabled"]
    assert all("started: None" in output for output in outputs.values())


# -- the collector alone: its protocol, its settings, its retention ---------------------------------------------
def _post(url: str, body: bytes, headers: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_collector_refuses_what_is_not_a_payload_naming_the_problem(tmp_path):
    with LocalCollector(Collection(tmp_path, "e", "d")) as collector:
        url = f"http://127.0.0.1:{collector.port}"
        good = {"ce-type": "azureml.inference.model_inputs", "Content-Type": "application/json", "ce-time": "1700000000"}
        assert _post(url + "/modeldata/log", b'[{"a": 1}]', good) == (200, "")
        status, message = _post(url + "/modeldata/log", b"[{", good)
        assert status == 400 and "body is not JSON" in message
        status, message = _post(url + "/modeldata/log", b'{"a": 1}', good)
        assert status == 400 and "not JSON records" in message
        status, message = _post(url + "/modeldata/log", b"[]", {"Content-Type": "application/json"})
        assert status == 400 and "missing header ce-type" in message
        status, message = _post(url + "/modeldata/log", b"[]", {**good, "ce-type": "azureml.inference.../x"})
        assert status == 400 and "is not azureml.inference.<collection>" in message
        assert _post(url + "/elsewhere", b"[]", good)[0] == 404
        with pytest.raises(urllib.error.HTTPError) as got:
            urllib.request.urlopen(url + "/modeldata/log", timeout=10)
        assert got.value.code == 404
        assert collector.written("model_inputs").rows == 1
        (path,) = collector.files("model_inputs")
        assert path.relative_to(tmp_path).parts[:7] == ("e", "d", "model_inputs", "2023", "11", "14", "22")
        environment = collector.environment()
        config = json.loads(Path(environment["AZUREML_MDC_CONFIG_PATH"]).read_text())
        assert config["collections"]["model_outputs"] == {"enabled": True, "sampleRatePercentage": 100}
        assert environment["AZUREML_MDC_PORT"] == str(collector.port)
        with pytest.raises(TimeoutError, match="model_outputs has 0 of 1 row"):
            collector.wait_for_rows("model_outputs", 1, timeout_s=0.1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"endpoint": "../up"}, "endpoint '../up' is not a folder name"),
        ({"deployment": ""}, "deployment '' is not a folder name"),
        ({"sampling_rate": 1.5}, "sampling_rate must be a number from 0 to 1"),
        ({"keep_days": 0}, "keep_days must be a whole number of days >= 1"),
    ],
)
def test_bad_settings_are_named(tmp_path, settings, message):
    with pytest.raises(CollectorError, match=message.replace("(", r"\(")):
        Collection(**{"root": tmp_path, "endpoint": "e", "deployment": "d", **settings})


def test_retention_deletes_only_the_hour_folders_older_than_keep_days(tmp_path):
    now = datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc)
    base = tmp_path / "local-bank"

    def hour(deployment, collection, moment):
        folder = base / deployment / collection / moment.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True)
        (folder / "instance.jsonl").write_text("{}\n")
        return folder

    old = [hour("blue", "model_inputs", now - timedelta(days=3)), hour("green", "model_outputs", now - timedelta(days=40))]
    ended = hour("blue", "model_inputs", now - timedelta(days=2, hours=1))  # ended 2 days ago to the minute
    kept = [hour("blue", "model_inputs", now - timedelta(days=2)), hour("blue", "model_outputs", now)]
    strangers = [base / "blue" / "model_inputs" / "notes", base / "blue" / "model_inputs" / "2024" / "13" / "01" / "00",
                 tmp_path / "local-other" / "blue" / "model_inputs" / "2020" / "01" / "01" / "00"]  # fmt: skip
    for folder in strangers:
        folder.mkdir(parents=True)
    reports = []
    collector = LocalCollector(Collection(tmp_path, "local-bank", "blue", keep_days=2), reports.append).start(now=now)
    collector.close()
    assert sorted(collector.deleted) == sorted(old + [ended])
    assert not any(folder.exists() for folder in old + [ended])
    assert all(folder.exists() for folder in kept + strangers)
    assert not old[0].parent.exists() and old[0].parent.parent.exists()  # its day went; the month holds another
    assert list((base / "green" / "model_outputs").iterdir()) == []  # day, month and year went
    assert len(reports) == 1 and "deleted 3 hour folder(s) older than 2 day(s)" in reports[0]
    assert purge(base, 2, now) == []
