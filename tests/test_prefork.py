"""jobs/local/prefork.py: a process forked from the warm interpreter runs its command as a fresh interpreter would, and
the local target hands it only the commands no shell needs to read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.local.prefork import Prefork
from jobs.local.target import python_script

# the fork-specific tests need Linux (FORKS), and read /proc
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the prefork server forks on Linux only (FORKS)")

# a module the forked processes find imported, and one that is not installed: the server starts without it
PRELOADED = "numpy.random"


@pytest.fixture(scope="module")
def prefork():
    return Prefork([PRELOADED, "no_such_module_anywhere"], {"PREFORK_SERVER_ONLY": "yes"})


def run(prefork, argv, folder: Path, env: dict | None = None) -> tuple[int, str]:
    log = folder / "log.txt"
    process = prefork.start(argv, folder, {"PATH": os.environ["PATH"], **(env or {})}, log)
    return process.wait(timeout=30), log.read_text()


REPORT = """
import json, os, random, sys, threading
preloaded = "numpy.random" in sys.modules  # before this command imports it
import numpy
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path0": sys.path[0],
                  "main": __name__, "main_module": sys.modules["__main__"].__dict__ is globals(),
                  "preloaded": preloaded, "project": [m for m in sys.modules if m.split(".")[0] == "jobs"],
                  "own_session": os.getsid(0) == os.getpid(), "stdin": sys.stdin.read(),
                  "gc": __import__("gc").isenabled(), "draws": [random.random(), float(numpy.random.random())]}))
"""


def test_a_command_gets_its_arguments_folder_environment_and_session_and_only_the_preloaded_modules(prefork, tmp_path):
    code, log = run(prefork, ["-c", REPORT, "first", "second word"], tmp_path, {"ONLY_THIS": "1"})
    seen = json.loads(log)
    assert code == 0
    assert seen["argv"] == ["-c", "first", "second word"] and seen["path0"] == ""
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}  # exactly its own: not the server's
    assert seen["main"] == "__main__" and seen["main_module"]
    assert seen["preloaded"] and seen["project"] == []  # the prefork server imports none of the project
    assert seen["own_session"] and seen["stdin"] == "" and seen["gc"]
    # seeded from the OS in each process, as fresh ones are: not the same draws in every forked process
    again = json.loads(run(prefork, ["-c", REPORT], tmp_path)[1])["draws"]
    assert again[0] != seen["draws"][0] and again[1] != seen["draws"][1]  # Python's random, NumPy's global generator


def test_a_script_finds_its_folder_first_and_exits_with_its_status(prefork, tmp_path):
    (tmp_path / "helper.py").write_text("ANSWER = 42\n")
    (tmp_path / "script.py").write_text(
        "import json, sys, helper\nprint(json.dumps([__file__, sys.argv[1:], sys.path[0], helper.ANSWER]))\nsys.exit(3)\n"
    )
    code, log = run(prefork, ["script.py", "--flag", "value"], tmp_path)
    assert code == 3
    assert json.loads(log) == [str(tmp_path / "script.py"), ["--flag", "value"], str(tmp_path), 42]


def test_an_exception_exits_1_with_the_commands_own_traceback(prefork, tmp_path):
    (tmp_path / "failing.py").write_text("def inner():\n    raise ValueError('the column is missing')\n\ninner()\n")
    code, log = run(prefork, ["failing.py"], tmp_path)
    assert code == 1
    assert log.startswith("Traceback (most recent call last):\n")
    assert log.strip().endswith("ValueError: the column is missing") and "prefork" not in log and "runpy" not in log
    assert 'failing.py", line 4, in <module>' in log and 'line 2, in inner' in log


def test_exit_joins_the_threads_then_runs_atexit_and_flushes(prefork, tmp_path):
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread'))).start()\n"
        "print('main', end=' ')\n"
    )
    status, log = run(prefork, ["-c", code], tmp_path)
    assert status == 0 and log.split() == ["main", "thread", "atexit"]


def test_a_process_ended_by_a_signal_reports_it_and_an_unbuffered_one_writes_through(prefork, tmp_path):
    log = tmp_path / "log.txt"
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    process = prefork.start(["-c", "import time; print('started'); time.sleep(60)"], tmp_path, env, log)
    deadline = time.monotonic() + 30
    while "started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "started\n"  # written before the process ends
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.3)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGTERM)  # its own session: the group is its pid
    assert process.wait(timeout=30) == -signal.SIGTERM
    assert process.wait(timeout=0) == -signal.SIGTERM  # ended: no wait, as Popen's


def test_a_folder_that_is_not_there_fails_the_process_not_the_server(prefork, tmp_path):
    log = tmp_path / "log.txt"
    process = prefork.start(["-c", "pass"], tmp_path / "missing", {"PATH": os.environ["PATH"]}, log)
    assert process.wait(timeout=30) == 1 and "FileNotFoundError" in log.read_text()
    assert run(prefork, ["-c", "print('still serving')"], tmp_path)[1] == "still serving\n"


@pytest.mark.parametrize(
    "command, expected",
    [
        ("python train.py --data /tmp/x.csv --n-estimators 3", ["train.py", "--data", "/tmp/x.csv", "--n-estimators", "3"]),
        ("python gate.py run -- python train.py --data d", ["gate.py", "run", "--", "python", "train.py", "--data", "d"]),
        ("python train.py --data $DATA", None),  # a shell expands it
        ("python train.py --name 'two words'", None),  # a shell unquotes it
        ("python train.py > out.txt", None),
        ("python prep.py && python train.py", None),
        ("python -m jobs run", None),
        ("bash run.sh", None),
    ],
)
def test_only_commands_no_shell_needs_to_read_are_forked(command, expected):
    assert python_script(command) == expected


def test_where_forking_is_not_safe_each_start_is_a_fresh_interpreter(tmp_path, monkeypatch):
    monkeypatch.setattr("jobs.local.prefork.FORKS", False)
    fresh = Prefork([PRELOADED])
    code, log = run(fresh, ["-c", "import sys; print('numpy.random' in sys.modules, sys.argv); sys.exit(4)", "x"], tmp_path)
    assert (code, log) == (4, "False ['-c', 'x']\n")


def test_the_prefork_server_ends_with_its_caller(tmp_path):
    """A caller that exits closes the server's input; the server exits, and a process it forked goes on."""
    caller = (
        "import os, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
        "from jobs.local.prefork import Prefork\n"
        "p = Prefork([]); folder = Path(sys.argv[2])\n"
        "child = p.start(['-c', 'import time; time.sleep(1); open(\"done\", \"w\").write(\"yes\")'], folder, dict(os.environ), folder / 'log')\n"
        "print(open(f'/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()[1])  # its parent: the server\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", caller, str(Path(__file__).parents[1]), str(tmp_path)], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()  # fmt: skip
    server = int(out[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (Path(f"/proc/{server}").exists() or not (tmp_path / "done").exists()):
        time.sleep(0.05)
    assert not Path(f"/proc/{server}").exists() and (tmp_path / "done").read_text() == "yes"
