"""Python processes forked from a warm interpreter: how the local target starts its jobs and inference servers.

Each job and each scoring server starts by importing the same stack (skops, which imports every scikit-learn
estimator, then MLflow, LightGBM, the inference server): about 4 s of CPU each time, most of what a job on small data
or a small model's server does. A prefork server is one Python process that imports the stack once; each start is
then a fork of it, ready in a fraction of a second. Gunicorn's pre-fork model, one level up.

A forked process runs `python -c CODE ARGS` or `python SCRIPT ARGS` as a fresh interpreter would: its own session,
working folder, environment, `sys.argv`, `sys.path[0]` and `__main__`, stdin from /dev/null, stdout and stderr in its
log, and it exits as Python exits (non-daemon threads joined, atexit handlers run, the status of SystemExit, or 1
after a traceback), less the modules' teardown. What it shares is the modules already imported, copy-on-write, and
what they read when imported: the prefork server's environment, the caller's with the `environment` given (so thread
pools are sized as a fresh process's would be), and the interpreter's string hash seed. So only modules that read no
per-process setting when imported belong in a preload list.

Run as a script, this file is the prefork server. It imports nothing of the project, so a forked process imports the
project's code from its own folder, as a fresh one does.
"""

from __future__ import annotations

import atexit
import builtins
import gc
import importlib
import io
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Mapping, Sequence

WAIT_SLICE_SECONDS = 0.25
# where a fork after these imports is safe: on macOS, system frameworks the libraries load may not survive a fork
# without exec (Python's multiprocessing spawns there by default since 3.8), so each start is a fresh interpreter
FORKS = sys.platform == "linux"

# -- the caller's side --------------------------------------------------------------------------------


class ForkedProcess:
    """A process the prefork server forked: what the local target uses of subprocess.Popen."""

    def __init__(self, prefork: Prefork, pid: int, args: Sequence[str]):
        self.prefork, self.pid, self.args = prefork, pid, list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # in short waits: a signal that another thread receives (Ctrl-C) never interrupts a lock's wait
            left = WAIT_SLICE_SECONDS if deadline is None else max(0.0, min(WAIT_SLICE_SECONDS, deadline - time.monotonic()))
            with self.prefork.changed:
                ended = self.prefork.changed.wait_for(lambda: self.returncode is not None or self.prefork.gone, left)
            if ended or (deadline is not None and time.monotonic() >= deadline):
                break
        if not ended:
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self.returncode is None:
            raise RuntimeError(f"the prefork server ({Path(__file__).name}) exited: process {self.pid}'s exit status is lost")
        return self.returncode


class Prefork:
    """A prefork server with `modules` imported, started on the first `start` with this process's environment and
    `environment` over it, and ended when this process exits: the processes it forked go on, each in its own session,
    as subprocesses started with start_new_session do."""

    def __init__(self, modules: Sequence[str], environment: Mapping[str, str] | None = None):
        self.modules, self.environment = tuple(modules), dict(environment or {})
        self.changed = threading.Condition()
        self.gone = False  # the server exited: only when this process ends, or when it crashed (not restarted: a bug)
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        self._pids: list[int] = []
        self._children: dict[int, ForkedProcess] = {}
        self._exited: dict[int, int] = {}

    def start(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> ForkedProcess | subprocess.Popen:
        """`python *argv` (`-c CODE ARGS` or `SCRIPT ARGS`) in `cwd` with exactly `env`, stdout and stderr to
        `log_path` (emptied first). A fresh interpreter where forking is not safe (FORKS)."""
        if not FORKS:
            with Path(log_path).open("w") as log:
                return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=dict(env), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        Path(log_path).write_bytes(b"")  # there when this returns, as a log opened for Popen is
        request = {"argv": list(argv), "cwd": str(cwd), "env": dict(env), "log": str(log_path)}
        with self._lock:
            server = self._running()
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            with self.changed:
                self.changed.wait_for(lambda: self._pids or self.gone)  # gone: an answer that never comes
                if not self._pids:
                    raise RuntimeError(f"the prefork server ({Path(__file__).name}) exited with {server.returncode}")
                pid = self._pids.pop(0)
                child = self._children[pid] = ForkedProcess(self, pid, [sys.executable, *argv])
                if pid in self._exited:  # it ended before its pid was read
                    del self._children[pid]
                    child.returncode = self._exited.pop(pid)
        return child

    def _running(self) -> subprocess.Popen:
        if self._server is None:
            self._server = subprocess.Popen(
                [sys.executable, __file__, *self.modules], env={**os.environ, **self.environment},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            threading.Thread(target=self._read, args=(self._server,), name="prefork", daemon=True).start()
            atexit.register(self._server.stdin.close)  # its end of input: the server exits
        return self._server

    def _read(self, server: subprocess.Popen) -> None:
        for line in server.stdout:
            answer = json.loads(line)
            with self.changed:
                if "pid" in answer:
                    self._pids.append(answer["pid"])
                elif answer["exited"] in self._children:
                    self._children.pop(answer["exited"]).returncode = answer["code"]
                else:
                    self._exited[answer["exited"]] = answer["code"]
                self.changed.notify_all()
        server.wait()
        with self.changed:
            self.gone = True
            self.changed.notify_all()


# -- the prefork server -------------------------------------------------------------------------------


def _serve(modules: Sequence[str]) -> None:
    """Import `modules`, then fork one process per request line on stdin; answer each request's pid, and each forked
    process's exit status as it ends (negative: the signal that ended it, as Popen's returncode), one JSON line each."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed here: a process that needs it imports it, or fails, as a fresh one would
            pass
    # what the imports made, out of the garbage collector's reach, so that no collection in a forked process touches
    # (and copies) the pages it shares with this one (the gc module's own advice for fork without exec)
    gc.disable()
    gc.freeze()
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a byte on `wake` as each child ends
    pending = b""
    while True:
        ready, _, _ = select.select([0, woken], [], [])
        if woken in ready:
            os.read(woken, 4096)
            _reap()
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                return  # the caller is gone; the forked processes go on in their sessions
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = os.fork()
                if pid == 0:
                    try:
                        _become(json.loads(line), (woken, wake))  # exits when the command ends
                    except BaseException:  # noqa: BLE001  (before the command ran: a folder that is not there, say)
                        traceback.print_exc()
                    finally:
                        os._exit(1)  # never back into this loop
                _answer({"pid": pid})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _answer(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _become(request: dict, server_fds: tuple[int, int]) -> None:
    """In the forked child: become `python *argv` as the request says, run it, and exit (never returns)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (stdin, log, *server_fds):
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _standard_streams(bool(request["env"].get("PYTHONUNBUFFERED")))
    gc.enable()
    if "numpy.random" in sys.modules:  # seeded from the OS in each fresh process (Python's `random` reseeds after fork)
        sys.modules["numpy.random"].seed()
    first, *args = request["argv"]
    script = os.path.abspath(first)  # before the command can change its folder
    try:
        if first == "-c":
            code, *args = args
            sys.argv, sys.path[0] = ["-c", *args], ""  # `python -c`: the working folder first
            main = types.ModuleType("__main__")
            main.__dict__["__builtins__"] = builtins
            sys.modules["__main__"] = main
            exec(compile(code, "<string>", "exec"), main.__dict__)
        else:
            sys.argv, sys.path[0] = [first, *args], os.path.dirname(script)  # `python SCRIPT`: its folder first
            runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException as error:  # noqa: BLE001  (what the interpreter prints, from the command's own frames on)
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename not in ("<string>", script):
            trace = trace.tb_next
        traceback.print_exception(type(error), error, trace or error.__traceback__)
        status = 1
    _exit(status)


def _exit_status(code) -> int:
    """The exit status of SystemExit(code), as the interpreter makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _exit(status: int) -> None:
    """What the interpreter does at exit that a command can see: wait for its non-daemon threads, run its atexit
    handlers, flush stdout and stderr. Then exit without tearing down the modules: that touches the pages this process
    shares with the prefork server, copying them, about a second for the training stack."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _standard_streams(unbuffered: bool) -> None:
    """stdout and stderr as a fresh interpreter makes them on a file: stdout block-buffered unless PYTHONUNBUFFERED
    is set (then written through, as `python -u`), stderr line-buffered."""
    encoding = sys.stdout.encoding  # the server's, from the same environment
    stdout = open(1, "wb", buffering=0, closefd=False) if unbuffered else open(1, "wb", closefd=False)
    sys.stdout = io.TextIOWrapper(stdout, encoding=encoding, write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), encoding=encoding, errors="backslashreplace",
                                  line_buffering=True)  # fmt: skip


if __name__ == "__main__":
    sys.path[0] = ""  # not this file's folder: a forked process resolves imports as a fresh interpreter does
    _serve(sys.argv[1:])
