"""Batch scoring on this machine: `python -m jobs batch --local --workload NAME --input DIR [--output DIR]`.

Scores every file of a folder with a registered local model (the workload's latest from the CLI; the run's
winner in the flow, through LocalTarget.score_batch), the batch deployment's scoring script
(jobs/src/batch_score.py) and its settings (jobs/specs/endpoints/batch-deployment.yml), the way an Azure ML
batch deployment's parallel run does:

- the folder's files, sorted, in mini-batches of `mini_batch_size` files (work is spread by file, whatever
  its size: how-to-use-batch-model-deployments);
- `max_concurrency_per_instance` worker processes, at most one per core here (the spec's figure is one per
  core of the cluster's VM size; this machine is one instance, so `instance_count` does not apply), each
  calling init() once with AZUREML_MODEL_DIR set, then run(mini_batch) for each mini-batch;
- what run() returns appended to `output_file_name` as Azure appends it: pandas' DataFrame.to_csv,
  space-separated, no header, mini-batches in the order they finish; beside it, `errors.csv` lists the error
  rows (with a header) for people to read;
- a mini-batch whose run() raises is tried again `retry_settings.max_retries` times, then fails;
- failed items count as Azure counts them against `error_threshold`: every file of a failed mini-batch, and
  the gap when run() returns fewer rows than the mini-batch has files ("Failed items are counted by the number
  gap between inputs and returns from each mini-batch", how-to-use-parallel-job-in-pipeline); once they pass
  the threshold (-1: never) the run stops, as Azure aborts the job, and the command exits non-zero;
- init() failing stops the run, as it fails Azure's job ("User program failed", troubleshoot batch endpoints).

Not mirrored: `retry_settings.timeout` (a process pool cannot stop one call) and `logging_level` (the
workers log warnings and errors, as score.py's do under the local server).
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import yaml

from jobs.batch import ERROR_STATUS, FILE, ROW, STATUS, BatchSummary, Tally, input_files
from jobs.flow import SPECS_DIR, FlowError, Report
from jobs.workloads import load_yaml

DEPLOYMENT_SPEC = SPECS_DIR / "endpoints" / "batch-deployment.yml"
ERRORS_FILE = "errors.csv"


@dataclass(frozen=True)
class BatchSettings:
    """The batch deployment's settings that the local run applies, from its spec."""

    mini_batch_size: int
    max_concurrency_per_instance: int
    max_retries: int
    error_threshold: int
    output_file_name: str
    scoring_script: Path

    @classmethod
    def from_spec(cls, spec: Path = DEPLOYMENT_SPEC) -> "BatchSettings":
        try:
            document = load_yaml(spec.read_text())
            settings = document["settings"]
            values = {
                "mini_batch_size": settings["mini_batch_size"],
                "max_concurrency_per_instance": settings["max_concurrency_per_instance"],
                "max_retries": settings["retry_settings"]["max_retries"],
                "error_threshold": settings["error_threshold"],
            }
            code = document["code_configuration"]
            script = (spec.parent / code["code"] / code["scoring_script"]).resolve()
            output = settings["output_file_name"]
        except (OSError, yaml.YAMLError) as error:
            raise FlowError(f"cannot read the batch deployment spec {spec}: {error}") from None
        except (KeyError, TypeError) as error:
            raise FlowError(f"{spec}: missing key {error} (settings, retry_settings or code_configuration)") from None
        low = {"mini_batch_size": 1, "max_concurrency_per_instance": 1, "max_retries": 0, "error_threshold": -1}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < low[key]:
                raise FlowError(f"{spec}: {key} must be a whole number of at least {low[key]}, not {value!r}")
        if not script.is_file():
            raise FlowError(f"{spec}: code_configuration names a scoring script that is not there: {script}")
        return cls(output_file_name=str(output), scoring_script=script, **values)

    def workers(self, files: int) -> int:
        """The worker processes for `files` input files: the spec's concurrency, which is one process per core of
        the cluster's VM size, here at most one per core of this machine and one per mini-batch."""
        batches = -(-files // self.mini_batch_size)
        return max(1, min(self.max_concurrency_per_instance, os.cpu_count() or 1, batches))


def run_batch(settings: BatchSettings, model_dir: Path, input_dir: Path, output_dir: Path, report: Report = print) -> BatchSummary:
    """Every file of `input_dir` through the scoring script, as Azure's parallel run calls it (module docstring)."""
    files = [str(path) for path in input_files(input_dir)]
    output = Path(output_dir) / settings.output_file_name
    if output.exists():  # "If the output file exists, the batch scoring job will fail" (how-to-use-batch-model-deployments)
        raise FlowError(f"{output} exists already: give another --output folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    batches = [files[i : i + settings.mini_batch_size] for i in range(0, len(files), settings.mini_batch_size)]
    workers = settings.workers(len(files))
    report(f"{len(files)} files in {len(batches)} mini-batches of up to {settings.mini_batch_size}, {workers} worker process(es)")
    tally, failed_items = Tally(), 0
    context = multiprocessing.get_context("spawn")  # fresh processes, as each of Azure's workers is
    with output.open("w") as predictions, (output.parent / ERRORS_FILE).open("w") as errors:
        errors.write("file,row,error\n")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(str(settings.scoring_script), str(model_dir))) as pool:  # fmt: skip
            attempts = {pool.submit(_score, batch): (batch, 1) for batch in batches}
            while attempts and not _over(failed_items, settings.error_threshold):
                done, _ = wait(attempts, return_when=FIRST_COMPLETED)
                for future in done:
                    batch, attempt = attempts.pop(future)
                    try:
                        text, error_text, part, returned = future.result()
                    except _InitFailed as failed:
                        _cancel(attempts)
                        raise FlowError(f"init() of {settings.scoring_script.name} failed:\n{failed}") from None
                    except BrokenProcessPool:
                        _cancel(attempts)
                        raise FlowError("a batch worker process died (out of memory?); no result for the files left") from None
                    except Exception as error:  # noqa: BLE001  (run() raising fails its mini-batch, as in Azure)
                        names = ", ".join(Path(name).name for name in batch)
                        if attempt <= settings.max_retries:
                            report(f"mini-batch [{names}] failed ({type(error).__name__}: {error}); try {attempt + 1}")
                            attempts[pool.submit(_score, batch)] = (batch, attempt + 1)
                            continue
                        failed_items += len(batch)
                        report(f"mini-batch [{names}] failed after {attempt} tries: {type(error).__name__}: {error}")
                        continue
                    predictions.write(text)
                    errors.write(error_text)
                    tally.add(part)
                    failed_items += max(0, len(batch) - returned)
            if attempts:
                _cancel(attempts)
                report(f"stopped: {failed_items} failed items passed error_threshold {settings.error_threshold}")
    return BatchSummary(str(output), len(files), tally, settings.error_threshold, failed_items)


def _over(failed_items: int, threshold: int) -> bool:
    return threshold >= 0 and failed_items > threshold


def _cancel(attempts: dict) -> None:
    for future in attempts:
        future.cancel()
    attempts.clear()


# -- in each worker process ----------------------------------------------------------------------------------

_script = None
_init_error: str | None = None


class _InitFailed(RuntimeError):
    """init() raised in a worker: no mini-batch can run there."""


def _start_worker(script: str, model_dir: str) -> None:
    """As Azure's worker starts: the model's folder in AZUREML_MODEL_DIR, the script's folder importable, and
    init() once. Its failure is kept for the first mini-batch to report, with the traceback."""
    global _script, _init_error
    os.environ["AZUREML_MODEL_DIR"] = model_dir
    sys.path.insert(0, str(Path(script).parent))
    logging.basicConfig(level=logging.WARNING, format=f"[batch worker {os.getpid()}] %(levelname)s %(message)s")
    try:
        spec = importlib.util.spec_from_file_location(Path(script).stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.init()
        _script = module
    except Exception:  # noqa: BLE001  (reported by the first mini-batch, whatever it was)
        _init_error = traceback.format_exc()


def _score(batch: list[str]) -> tuple[str, str, Tally, int]:
    """run() on one mini-batch: its rows as Azure's append_row writes them, its error rows for errors.csv, their
    count, and how many rows it returned."""
    if _init_error is not None:
        raise _InitFailed(_init_error)
    frame = _script.run(batch)
    failed = frame[frame.iloc[:, STATUS].to_numpy(dtype=object) == ERROR_STATUS]
    error_text = failed.iloc[:, [FILE, ROW, -1]].to_csv(header=False, index=False)
    return frame.to_csv(sep=" ", header=False, index=False), error_text, Tally.of(frame), len(frame)
