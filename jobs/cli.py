"""`python -m jobs`: the post-provision stage's command line. Parsing and dispatch only: the flow
(jobs/flow.py), the workloads (jobs/workloads.py) and the targets hold the logic.

    python -m jobs run --local [--data-dir DIR] [--workload NAME]   every workload (or those named): train,
                                                                    register, serve and call it, on this machine
    python -m jobs serve --local --workload NAME [--port N]         serve its latest local model until stopped
    python -m jobs run --stack dev | --outputs FILE [--dry-run]     the same flow in Azure ML
    python -m jobs batch --local --workload NAME --input DIR        score every CSV file of a folder with its latest
        [--output DIR]                                              model (--stack: on its batch endpoint in Azure)
    python -m jobs pipeline --local [--workload NAME]               each workload's retraining pipeline, step by step
        [--when-drifted | --always]                                 (its drift gate on or off, whatever retrain.when says)
    python -m jobs monitor --local --workload NAME                  the monitor over what the served model collected:
        [--production DIR] [--since TIME] [--until TIME]            drift and data quality against the training rows
    python -m jobs monitor --local --demo --workload NAME           two windows of requests, the second drifted; the
                                                                    monitor on each; the drift-gated pipeline on each
    python -m jobs schedule --stack dev                             create or update the retraining schedules and the
                                                                    endpoints' monitors in Azure
    python -m jobs bench [--local | --stack dev] --workload NAME    load-test its endpoint (served here, or in
        [--concurrency N] [--requests N] [--duration S] [--rows N]  Azure with its key): requests/s, latency, errors
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
from pathlib import Path

from infra import outputs as keys
from jobs import bench as load_test, flow
from jobs.flow import FlowError
from jobs.local.target import AUTOML_MINUTES
from jobs.workloads import ONLINE_KINDS, load_workloads, load_yaml

AZURE_ONLY = ("deploy", "status", "schedule")
# the commands that run here only, and what stands for them in Azure
LOCAL_ONLY = {
    "serve": "in Azure the endpoints serve (see deploy and invoke)",
    "monitor": "in Azure the monitors are schedules (`schedule` creates them)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = argparse.ArgumentParser(add_help=False)
    where = target.add_argument_group("target (default: --local)").add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="this machine: local processes, local MLflow, azmlinfsrv")
    where.add_argument("--stack", metavar="NAME", help="Azure ML, from `pulumi stack output --json --stack NAME`")
    where.add_argument("--outputs", metavar="FILE", type=Path, help="Azure ML, from a file holding those outputs")
    target.add_argument("--dry-run", action="store_true", help="Azure: print the entities it would send, send nothing")
    target.add_argument("--workload", action="append", default=[], metavar="NAME",
                        help="only this workload (repeatable; default: every workload under workloads/)")
    local = target.add_argument_group("local target")
    local.add_argument("--data-dir", type=Path, default=Path("data"), help="folder with the catalog's data files (default: data/)")
    local.add_argument("--work-dir", type=Path, default=Path(".local"), help="MLflow store, runs, logs (default: .local/)")
    local.add_argument("--env", metavar="NAME", help="a local environment (dev, prod...): its MLflow store, runs and served "
                       "models under <work dir>/NAME/ (default: none, the work dir itself)")  # fmt: skip
    local.add_argument("--trials", type=int, default=3, help="sweep trial budget (default: 3)")
    local.add_argument("--fix", metavar="NAME=VALUE", action="append", default=[], type=_fixed,
                       help="fix a sweep search_space parameter instead of sampling it, e.g. --fix epochs=5")  # fmt: skip
    local.add_argument("--seed", type=int, default=0, help="seed of the trials' random sampling")
    local.add_argument("--parallel", type=int, help="training processes at a time (default: one per core, each "
                       "with OMP_NUM_THREADS cores / N unless that is set)")
    local.add_argument("--automl-minutes", type=float, default=AUTOML_MINUTES,
                       help=f"the most minutes each AutoML job gets here (default: {AUTOML_MINUTES:g}; its spec's own "
                            "limit if smaller)")  # fmt: skip

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[target], help="the whole flow: jobs, best model, endpoints, a sample request")
    serve = commands.add_parser("serve", parents=[target], help="serve the latest registered model until stopped")
    serve.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1 (default: 5001; 0 picks a free one)")
    submit = commands.add_parser("submit", parents=[target], help="run jobs only (all, or those named)")
    submit.add_argument("jobs", nargs="*", metavar="JOB", help="job keys (<workload>-<spec>, e.g. housing-lightgbm)")
    deploy = commands.add_parser("deploy", parents=[target], help="roll a registered model out to the endpoints")
    deploy.add_argument("--version", help="model version (default: the latest)")
    invoke = commands.add_parser("invoke", parents=[target], help="send a request (default: the sample) to the endpoints")
    invoke.add_argument("--file", type=Path, help="request JSON (default: the workload's sample request)")
    invoke.add_argument("--url", default="http://127.0.0.1:5001/score", help="local: the scoring URL of `serve`")
    commands.add_parser("status", parents=[target], help="the jobs' and endpoints' state")
    batch = commands.add_parser("batch", parents=[target], help="score every CSV file of a folder with the latest "
                                "model (here in worker processes; in Azure on the workload's batch endpoint)")  # fmt: skip
    batch.add_argument("--input", type=Path, required=True, metavar="DIR", help="the folder of CSV files to score")
    batch.add_argument("--output", type=Path, metavar="DIR", help="local: where predictions.csv and errors.csv go "
                       "(default: <work dir>/batch/<workload>/<date-time>)")  # fmt: skip
    inputs = argparse.ArgumentParser(add_help=False)
    inputs.add_argument("--input", metavar="NAME=VALUE", action="append", default=[], type=_fixed,
                        help="local: set a pipeline input, e.g. --input min_rows=100 (or force=true past the drift gate)")  # fmt: skip
    pipeline = commands.add_parser("pipeline", parents=[target, inputs],
                                   help="run each workload's retraining pipeline (here: its steps as local processes)")  # fmt: skip
    gate = pipeline.add_mutually_exclusive_group()
    gate.add_argument("--when-drifted", dest="gated", action="store_const", const=True,
                      help="with the drift gate on (its monitor step first; training only if a signal failed), whatever "
                           "the workload's retrain.when says")  # fmt: skip
    gate.add_argument("--always", dest="gated", action="store_const", const=False,
                      help="without the drift gate: every step runs, whatever the workload's retrain.when says")
    monitor = commands.add_parser("monitor", parents=[target, inputs],
                                  help="local: the monitor over what the served model collected (--demo: two windows, the "
                                       "second drifted, and the drift-gated pipeline on each)")  # fmt: skip
    monitor.add_argument("--production", type=Path, metavar="DIR", help="a data collector folder (default: what the "
                         "workload's served models collected, <work dir>/collected/<workload>)")  # fmt: skip
    monitor.add_argument("--since", metavar="TIME", help="the window's start: a UTC time (2026-12-06T19:00:00Z) or a "
                         "duration back from --until (P7D); default: everything collected")  # fmt: skip
    monitor.add_argument("--until", metavar="TIME", help="the window's end, a UTC time (default: now)")
    monitor.add_argument("--demo", action="store_true", help="serve the latest model, send the held-out rows, then the "
                         "same rows drifted as workload.yml's monitor.demo says; monitor each window and run the "
                         "drift-gated pipeline on each")  # fmt: skip
    commands.add_parser("schedule", parents=[target],
                        help="Azure: create or update each workload's retraining schedule and its endpoints' monitors "
                             "for the stack's environment")  # fmt: skip
    promote = commands.add_parser("promote", parents=[target], help="publish an environment's champion to the ML registry, "
                                  "compare it in the next environment and roll it out there (or --rollback)")  # fmt: skip
    promote.add_argument("--from", dest="source", metavar="ENV", help="the environment whose model is promoted: a local "
                         "environment (--local) or a stack (`pulumi stack output`); Azure: publishes only, without --to")  # fmt: skip
    promote.add_argument("--to", dest="destination", metavar="ENV", help="the environment it goes to; Azure: without "
                         "--from, compares and rolls out the ML registry's --version (default: its newest)")  # fmt: skip
    promote.add_argument("--from-outputs", type=Path, metavar="FILE", help="the source stack's outputs, in place of --from")
    promote.add_argument("--to-outputs", type=Path, metavar="FILE", help="the target stack's outputs, in place of --to")
    promote.add_argument("--from-data-dir", type=Path, help="local: the source environment's data (default: --data-dir)")
    promote.add_argument("--version", help="the source's registered version (default: its latest); with --to alone in "
                         "Azure, the ML registry's version")  # fmt: skip
    promote.add_argument("--force", action="store_true", help="roll out even a candidate that scores worse there")
    promote.add_argument("--rollback", action="store_true", help="serve again what --to's live version replaced")
    promote.add_argument("--demo", action="store_true", help="local: the whole path for each workload, dev to prod and "
                         "back, in <work dir>/dev, prod and ml-registry (docs/operators.md, \"Promotion\")")  # fmt: skip
    bench = commands.add_parser("bench", parents=[target], help="load-test the served endpoint: requests/s, latency, errors")
    bench.add_argument("--concurrency", type=_positive(int), default=load_test.CONCURRENCY,
                       help=f"requests in flight, on one connection each (default: {load_test.CONCURRENCY})")
    bench.add_argument("--requests", type=_positive(int), default=load_test.REQUESTS,
                       help=f"stop after this many requests (default: {load_test.REQUESTS:,})")
    bench.add_argument("--duration", type=_positive(float), default=load_test.DURATION_S, metavar="SECONDS",
                       help=f"or after this many seconds, whichever comes first (default: {load_test.DURATION_S:g})")
    bench.add_argument("--rows", type=_positive(int), help="records per request: the sample request's, cycled "
                       "(default: as many as it has)")
    bench.add_argument("--kind", choices=ONLINE_KINDS, help="Azure: which online endpoint of the workload (default: "
                       "the first its workload.yml lists)")
    bench.add_argument("--url", help="local: call this scoring URL instead of serving the workload's latest model")
    return parser


def _positive(number: type):
    """An argparse type: a number of that type above zero."""

    def parse(text: str):
        try:
            value = number(text)
        except ValueError:
            value = 0
        if not value > 0:  # NaN too
            raise argparse.ArgumentTypeError(f"expected a number above zero, got {text!r}")
        return value

    return parse


def _fixed(text: str) -> tuple[str, object]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, load_yaml(value)


def make_target(args: argparse.Namespace, resources: contextlib.ExitStack):
    """The target the arguments choose; anything it holds open is released when `resources` closes."""
    if args.stack or args.outputs:
        from jobs.azure import commands

        if args.command in LOCAL_ONLY:
            raise FlowError(f"`{args.command}` runs on this machine (--local); {LOCAL_ONLY[args.command]}")
        return commands.target(commands.load_outputs(args.stack, args.outputs), args.data_dir)
    if args.dry_run:
        raise FlowError("--dry-run applies to the Azure target: add --stack NAME or --outputs FILE")
    from jobs.local.target import LocalTarget

    serving = args.command in ("serve", "bench")  # `run` sends one request: one server worker starts sooner
    target = LocalTarget(args.data_dir, args.work_dir / (args.env or ""), args.trials, dict(args.fix), args.seed,
                         args.port if args.command == "serve" else 0, workers=2 if serving else 1, parallel=args.parallel,
                         automl_minutes=args.automl_minutes)  # fmt: skip
    resources.callback(target.close)
    return target


def one_workload(args):
    """The workload a command about one workload names: --workload, or the only one there is."""
    workloads = load_workloads(args.workload)
    if len(workloads) != 1:
        raise FlowError(f"`{args.command}` needs one workload: --workload {'|'.join(w.name for w in workloads)}")
    return workloads[0]


def run(args, target) -> None:
    workloads = load_workloads(args.workload)
    if getattr(target, "outputs", {}).get(keys.ML_REGISTRY_ACCESS) == "read":
        # prod trains nothing of a registry workload: `promote --to-outputs` creates its endpoints with dev's model
        promoted = [w for w in workloads if w.promotion == "registry"]
        for workload in promoted:
            print(f"{workload.name}: promotion: registry, so it is not trained here; `promote --to-outputs` serves dev's model")
        workloads = [w for w in workloads if w.promotion != "registry"]
        if not workloads:
            return
    summary = flow.run(target, workloads)
    print(summary.table(servers_stopped=args.local))


def serve(args, target) -> None:
    workload = one_workload(args)
    model = target.latest_model(workload)
    endpoint = target.deploy(workload, model, flow.stamped(print, "serve"))[0]
    print(f"serving {model.name}:{model.version} ({model.metric}={model.value:,.6g}); Ctrl-C stops it")
    print(f"  scoring URL: {endpoint.scoring_uri}\n  Swagger:     {endpoint.swagger_uri}")
    print(f"  try: curl -s {endpoint.scoring_uri} -H 'Content-Type: application/json' -d @{workload.sample_request}")
    # a service manager's SIGTERM, like Ctrl-C, unwinds through main() so the server is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        target.servers[endpoint.name].wait()


def submit(args, target) -> None:
    workloads = load_workloads(args.workload)
    jobs = [job for workload in workloads for job in workload.jobs]
    unknown = sorted(set(args.jobs) - {job.key for job in jobs})
    if unknown:
        raise FlowError(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(job.key for job in jobs)}")
    target.prepare(workloads, flow.stamped(print, "assets"))
    results, _ = flow.run_jobs(target, [job for job in jobs if not args.jobs or job.key in args.jobs], print)
    metric = {workload.name: workload.metric for workload in workloads}
    for result in results:
        shown = metric[result.job.workload]
        print(f"{result.job.key}: {result.run_name} {result.status} {shown}={result.metrics.get(shown, float('nan')):,.6g}")


def request(args, workload) -> dict:
    """The request file given, or the workload's sample request."""
    path = args.file or workload.sample_request
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise FlowError(f"cannot read the request {path}: {error}") from None


def invoke(args, target) -> None:
    if args.stack or args.outputs:
        from jobs.azure import commands

        for workload in load_workloads(args.workload):
            commands.invoke(target, workload, request(args, workload))
        return
    from jobs.local.server import invoke as post

    print(json.dumps(post(args.url, request(args, one_workload(args)))))


def deploy(args, target) -> None:
    from jobs.azure import commands

    commands.deploy(target, one_workload(args), args.version)


def status(args, target) -> None:
    from jobs.azure import commands

    commands.status(target, load_workloads(args.workload))


def bench(args, target) -> None:
    """Load-test the workload's endpoint: Azure's (its scoring URI and key from the workspace), the local URL
    given, or its latest local model served here for the run. The figures go to stdout, the rest to stderr."""
    workload = one_workload(args)
    request = workload.request()
    rows = args.rows or len(request["data"])
    note = functools.partial(print, file=sys.stderr)
    if args.stack or args.outputs:
        from jobs.azure import commands

        if args.url:
            raise FlowError("--url applies to --local: in Azure the endpoint's scoring URI comes from the workspace")
        kind = args.kind or next(iter(workload.online), None)
        if kind not in workload.online:
            served = ", ".join(workload.online) or "no endpoint"
            raise FlowError(f"workload {workload.name} serves online on {served}" + (f", not {kind}" if kind else ""))
        url, headers = commands.scoring_access(target, workload, kind)
    else:
        if args.kind:
            raise FlowError("--kind picks an Azure endpoint (with --stack or --outputs); here one server serves the workload")
        kind = "managed"  # the local server runs score.py as a managed deployment does (jobs/local/target.py)
        url, headers = args.url, {}
        if not url:  # its latest model, served until the target closes
            url = target.deploy(workload, target.latest_model(workload), flow.stamped(note, "bench"))[0].scoring_uri
    if problem := load_test.too_many_rows(rows, kind):
        note(problem)
    note(f"bench: {url}: {args.requests:,} requests or {args.duration:g} s, {args.concurrency} at a time, {rows:,} rows each")
    body = load_test.payload(request, rows)
    result = load_test.run(url, headers, body, rows, args.concurrency, args.requests, args.duration, progress=sys.stderr)
    print(result.report())
    if result.interrupted:  # main() says so and exits 130; a local server stops as the target closes
        raise KeyboardInterrupt


def pipeline(args, target) -> None:
    workloads = load_workloads(args.workload)
    if args.stack or args.outputs:
        from jobs.azure import commands

        if args.input:
            raise FlowError("--input applies to --local; in Azure the pipeline's inputs are its YAML's")
        commands.run_pipeline(target, workloads, gated=args.gated)
        return
    from jobs.local.pipeline import LocalPipelineRunner, summary

    workloads = [workload for workload in workloads if workload.retrain]
    if not workloads:
        raise FlowError("no workload declares a retraining pipeline (workload.yml: retrain)")
    target.prepare(workloads, flow.stamped(print, "assets"))
    runner = LocalPipelineRunner(target)
    runs = flow.in_parallel([lambda w=w: runner.run(w, flow.stamped(print, w.name), dict(args.input), args.gated)
                             for w in workloads])  # fmt: skip
    print("\n\n".join(summary(run) for run in runs))


def schedule(args, target) -> None:
    from jobs.azure import commands

    commands.schedule(target, load_workloads(args.workload))


def batch(args, target) -> None:
    workload = one_workload(args)
    if args.stack or args.outputs:
        from jobs.azure import batch as azure_batch

        if args.output:
            raise FlowError("--output applies to --local: Azure's job writes to the workspace's storage (downloaded "
                            "under .local/azure-batch/)")  # fmt: skip
        summary = azure_batch.score_latest(target, workload, args.input)
    else:
        summary = target.score_batch(workload, target.latest_model(workload), args.input, print, args.output)
    summary.report(print)
    if not summary.passed:
        raise FlowError(f"batch scoring stopped: {summary.failed_items} failed files passed the deployment's "
                        f"error_threshold ({summary.error_threshold})")  # fmt: skip


def dry_run(args) -> None:
    """Azure only: print every entity the command would send, built from the outputs alone."""
    from jobs.azure import commands

    outputs = commands.load_outputs(args.stack, args.outputs)
    print(commands.dry_run(outputs, load_workloads(args.workload), args.data_dir))


def monitor(args, target) -> int:
    """The monitor over the workload's collected data (or, with --demo, the whole loop on two windows): its exit
    code is the monitor's, 0 every signal passed, 1 one failed, 2 the input could not be used."""
    from jobs import monitoring

    workload = one_workload(args)
    if args.demo:
        if args.production or args.since or args.until:
            raise FlowError("--demo sends its own two windows: leave out --production, --since and --until")
        return monitoring.demo(target, workload, print, dict(args.input))
    if args.input:
        raise FlowError("--input applies to --demo (its drift-gated pipeline runs) and to `pipeline`")
    return monitoring.run_local(target, workload, print, args.production, args.since, args.until)


def promote(args, target) -> int:
    """The four steps between two environments (jobs/promotion.py): local ones, or two stacks' workspaces and their ML
    registry (every workload with promotion: registry, or those named). Exit code 1 when the target's comparison
    refuses a candidate: that workload's environment is unchanged."""
    if args.local:
        return _promote_local(args, None if args.demo else one_workload(args))
    promoted = [workload for workload in load_workloads(args.workload) if workload.promotion == "registry" or args.workload]
    if not promoted:
        raise FlowError("no workload sets promotion: registry; name one with --workload")
    return _promote_azure(args, promoted)


def _unless_refused(step) -> int:
    """0 once `step()` has run; 1, with the refusal on stderr, when the target's comparison refused the candidate."""
    from jobs import promotion

    try:
        step()
    except promotion.PromotionRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    return 0


def _promote_azure(args, workloads) -> int:
    """Each workload through the ML registry, with one sign-in per side: the source's identity publishes, the target's
    compares and rolls out (or rolls back)."""
    from jobs import promotion
    from jobs.azure import commands
    from jobs.azure.promotion import AzureEnvironment, AzureMlRegistry, check_pair, registry_client

    source_outputs = commands.load_outputs(args.source, args.from_outputs) if args.source or args.from_outputs else None
    target_outputs = commands.load_outputs(args.destination, args.to_outputs) if args.destination or args.to_outputs else None
    if args.rollback and target_outputs is None:
        raise FlowError("--rollback needs the target: --to STACK or --to-outputs FILE")
    registry_name = check_pair(None if args.rollback else source_outputs, target_outputs)
    if args.dry_run:
        for workload in workloads:
            print(commands.dry_run_promotion(source_outputs, target_outputs, workload, args.data_dir))
        return 0

    def signed_in(outputs, data_dir):
        environment = AzureEnvironment(commands.target(outputs, data_dir))
        return environment, AzureMlRegistry(registry_client(environment.target.credential, registry_name), registry_name, environment.name)

    published = {}
    if source_outputs is not None and not args.rollback:
        source, registry = signed_in(source_outputs, args.from_data_dir or args.data_dir)
        published = {workload.name: promotion.publish(source, registry, workload, args.version, print) for workload in workloads}
    if target_outputs is None:
        return 0
    destination, registry = signed_in(target_outputs, args.data_dir)
    destination.target.prepare(workloads, print, data=False)  # the environments its deployments pin
    codes = []
    for workload in workloads:
        if args.rollback:
            promotion.rollback(destination, workload, print)
            continue
        candidate = published.get(workload.name) or (
            registry.get(workload.model, args.version) if args.version else registry.newest(workload.model))
        codes.append(_unless_refused(lambda w=workload, c=candidate: promotion.adopt(destination, registry, c, w, print, force=args.force)))
    return max(codes, default=0)


def _promote_local(args, workload) -> int:
    from jobs import promotion
    from jobs.local.promotion import ML_REGISTRY_FOLDER, LocalEnvironment, LocalMlRegistry, demo
    from jobs.local.target import LocalTarget

    if args.env:
        raise FlowError("promote names its environments with --from and --to, not --env")
    if args.demo:
        return demo(args.data_dir, args.work_dir, load_workloads(args.workload), print, args.automl_minutes)
    if not args.destination:
        raise FlowError("promote needs --to ENV")
    destination = LocalEnvironment(args.destination, LocalTarget(args.data_dir, args.work_dir / args.destination, workers=1))
    try:
        if args.rollback:
            promotion.rollback(destination, workload, print)
            return 0
        if not args.source:
            raise FlowError("promote --local needs --from ENV (or --rollback)")
        source = LocalEnvironment(args.source, LocalTarget(args.from_data_dir or args.data_dir, args.work_dir / args.source, workers=1))
        registry = LocalMlRegistry(args.work_dir / ML_REGISTRY_FOLDER)
        try:
            return _unless_refused(lambda: promotion.promote(source, destination, registry, workload, print,
                                                             version=args.version, force=args.force))  # fmt: skip
        finally:
            source.target.close()
    finally:
        destination.target.close()


COMMANDS = {"run": run, "serve": serve, "submit": submit, "invoke": invoke, "deploy": deploy, "status": status,
            "bench": bench, "pipeline": pipeline, "schedule": schedule, "batch": batch, "monitor": monitor,
            "promote": promote}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow's download progress bars would interleave with the flow's lines (its jobs inherit this too)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with contextlib.ExitStack() as resources:
            if args.command in AZURE_ONLY and not (args.stack or args.outputs):
                raise FlowError(f"`{args.command}` applies to Azure ML: add --stack NAME or --outputs FILE"
                                + (" (locally, `serve` deploys the latest model)" if args.command == "deploy" else ""))  # fmt: skip
            if args.command == "promote":
                return promote(args, None)
            if args.dry_run and (args.stack or args.outputs):
                dry_run(args)
            else:
                # a command may answer its own exit code (the monitor's 0, 1 or 2)
                return COMMANDS[args.command](args, make_target(args, resources)) or 0
    except FlowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
