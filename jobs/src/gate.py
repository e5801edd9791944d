"""The drift gate of a retraining pipeline: its head step decides whether the pipeline trains, and every step after
it runs its command only when it does.

    python gate.py decide --signals DIR --decision DIR [--retrain-on SIGNAL,...] [--force {true,false}]
        [--mode {gate,alert}] -- python monitor.py ... --output DIR
    python gate.py run [--decision DIR] -- python train.py ...

`decide` runs the monitor command and writes DIR/decision.json: train when one of the --retrain-on signals
failed (default: data and prediction drift, as the monitor's signals.json says), or --force is true; skip
otherwise. A failed data quality signal is an alert, not a reason to retrain: retraining on the same data asset
cannot mend the inputs. A monitor that cannot use its input (exit 2, or any other failure) fails the step, so
the pipeline stops: unusable data is never read as "no drift". `--mode alert` (the monitor as a scheduled job of
its own) fails the step when any signal failed, after the decision is written, so that the job's failure
notifies. `run` executes its command unless the decision says skip; without --decision (a pipeline with no gate
binds none) it always does.

A command that is `python SCRIPT.py ARGS` with the interpreter running the gate runs in this process, as that
interpreter would run it (its sys.argv, sys.path[0] and __main__; its exit status, or 1 after a traceback): what
the gate's process has imported stays imported. The local target forks each step from an interpreter with the job
scripts' libraries imported (jobs/local/prefork.py); a new interpreter would import them again, about 4 s a step.
Any other command runs as its own process.

Azure ML pipelines have no generally available way to skip a step on a previous step's output (control flow
`if_else` needs AZURE_ML_CLI_PRIVATE_FEATURES_ENABLED: azure-ai-ml's pipeline_component.py "private node types"),
so the steps skip themselves; each still starts on its compute, for seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

DECISION_FILE = "decision.json"
SIGNALS_FILE = "signals.json"  # monitor.py's, in its --output
# drift retrains; data quality alerts
RETRAIN_ON = ["data_drift", "prediction_drift"]
# monitor.py's exit codes
PASSED, FAILED = 0, 1


def _command(argv: list[str]) -> tuple[list[str], list[str]]:
    """(gate.py's own arguments, the command after `--`)."""
    if "--" not in argv:
        sys.exit("gate.py: give the command to run after `--`")
    split = argv.index("--")
    if not argv[split + 1 :]:
        sys.exit("gate.py: the command after `--` is empty")
    return argv[:split], argv[split + 1 :]


def _script_of_this_python(command: list[str]) -> str | None:
    """SCRIPT of a `python SCRIPT.py ...` command whose python is this interpreter (the same path: a symlink to the
    same binary may be another environment), else None."""
    program = shutil.which(command[0])
    same = program is not None and os.path.abspath(program) == os.path.abspath(sys.executable)
    return command[1] if same and len(command) > 1 and command[1].endswith(".py") else None


def _run_script(script: str, args: list[str]) -> int:
    """Run `script` as this interpreter's __main__ with `args`; its exit status, as `python script ARGS` would end."""
    saved_argv, saved_path0 = sys.argv, sys.path[0]
    sys.argv, sys.path[0] = [script, *args], os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as ended:
        if ended.code is None or isinstance(ended.code, int):
            return ended.code or 0
        print(ended.code, file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - reported as an interpreter reports it (from the script's own frames)
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename != script:
            trace = trace.tb_next
        traceback.print_exception(type(error), error, trace or error.__traceback__)
        return 1
    finally:
        sys.argv, sys.path[0] = saved_argv, saved_path0
        sys.stdout.flush()
        sys.stderr.flush()


def _execute(command: list[str]) -> int:
    """The command's exit status: run in this process when it is this interpreter's script, else as a process."""
    script = _script_of_this_python(command)
    return _run_script(script, command[2:]) if script else subprocess.run(command).returncode


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return text.lower() == "true"


def _signals(text: str) -> list[str]:
    return [name for name in (part.strip() for part in text.split(",")) if name]


def decide(argv: list[str]) -> int:
    own, command = _command(argv)
    parser = argparse.ArgumentParser(prog="gate.py decide")
    parser.add_argument("--signals", type=Path, required=True, help="the monitor's --output (its signals.json)")
    parser.add_argument("--decision", type=Path, required=True, help="the folder decision.json goes to")
    parser.add_argument("--retrain-on", type=_signals, default=RETRAIN_ON, metavar="SIGNAL,...",
                        help=f"the signals whose failure retrains (default: {','.join(RETRAIN_ON)})")
    parser.add_argument("--force", type=_boolean, default=False, help="train whatever the monitor says")
    parser.add_argument("--mode", choices=("gate", "alert"), default="gate",
                        help="gate: decide, and pass; alert: also fail this step when a signal failed (a monitor job)")
    args = parser.parse_args(own)
    code = _execute(command)
    if code not in (PASSED, FAILED):
        print(f"gate.py: the monitor could not judge the data (exit code {code}): the pipeline stops", file=sys.stderr)
        return code or 2
    path = args.signals / SIGNALS_FILE
    try:
        signals = json.loads(path.read_text())["signals"]
    except (OSError, ValueError, KeyError) as error:
        print(f"gate.py: the monitor exited {code} but its {path} cannot be read: {error}", file=sys.stderr)
        return 2
    failed = [name for name, result in signals.items() if not result.get("passed")]
    drifted = sorted(set(failed) & set(args.retrain_on))
    if drifted:
        reason = f"{' and '.join(drifted)} failed"
    else:
        reason = f"{' and '.join(sorted(set(args.retrain_on) & set(signals))) or 'no retraining signal'} passed"
        reason += f" ({' and '.join(failed)} failed: an alert, not a reason to retrain)" if failed else ""
        reason += "; force is true" if args.force else ""
    decision = {"train": bool(drifted) or args.force, "drifted": drifted, "failed": failed, "forced": args.force,
                "monitor_exit_code": code, "reason": reason}  # fmt: skip
    args.decision.mkdir(parents=True, exist_ok=True)
    (args.decision / DECISION_FILE).write_text(json.dumps(decision, indent=2) + "\n")
    print(f"gate: {'train' if decision['train'] else 'skip'} ({decision['reason']})")
    return FAILED if args.mode == "alert" and failed else 0


def run(argv: list[str]) -> int:
    own, command = _command(argv)
    parser = argparse.ArgumentParser(prog="gate.py run")
    parser.add_argument("--decision", type=Path, help="the gate's decision folder (none: run)")
    args = parser.parse_args(own)
    if args.decision is not None:
        path = args.decision / DECISION_FILE
        try:
            decision = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            sys.exit(f"gate.py: cannot read the gate's decision {path}: {error}")
        if not decision.get("train"):
            print(f"skipped: {decision.get('reason', 'the gate said skip')}")
            return 0
    if _script_of_this_python(command):
        return _run_script(command[1], command[2:])
    sys.stdout.flush()
    os.execvp(command[0], command)  # the step's own command, its exit code the step's


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    actions = {"decide": decide, "run": run}
    if not argv or argv[0] not in actions:
        sys.exit("usage: gate.py decide|run ... -- COMMAND")
    return actions[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
