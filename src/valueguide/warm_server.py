"""Jobs that skip the imports: one warm process imports torch, transformers and every stage once, then
forks a copy of itself for each job.

In the tiny world a job's work takes seconds and its imports six more (torch, transformers, the model
classes, pandas): two fifths of ``make run``'s time went to importing the same modules 54 times.
``serve_while(command, run_job)`` runs ``command`` (Snakemake) with ``VALUEGUIDE_WARM`` naming a private
socket and serves it meanwhile: a job's command (``python -m valueguide.warm ARGS``, the Snakefile's CLI
when that variable is set and jobs run on this machine) sends its arguments, working folder, environment
and standard streams, and the server forks a child that runs ``valueguide ARGS`` (``run_job``: the CLI's
``main``) exactly as a fresh process would, writing to the job's own streams. The job's exit status comes
back to the job's command; a job command that is stopped (Snakemake cancelling a job) takes its child
with it. With no server to reach, a job runs in its own process as before.

The server imports its modules one at a time between jobs' requests, from the first request on (a
job that comes meanwhile imports what is still missing itself), and computes nothing before it forks
(no torch thread pool exists to be copied); each child resets the logging that the server's own
command set up, so a job's artifacts and log are what a fresh process writes (checked by
tests/test_warm.py). Snakemake's benchmark files time the job's command: their wall-clock seconds are
the job's, their CPU and memory columns only the command's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Callable

ENV = "VALUEGUIDE_WARM"
# Every stage a job may run, with the model classes of the world: imported once, before the first fork.
PRELOAD = ("valueguide.cli", "valueguide.world.build", "valueguide.world.lm", "valueguide.world.summary",
           "valueguide.prompts", "valueguide.sampling", "valueguide.value.fit", "valueguide.value.classifier",
           "valueguide.implicit.dpo", "valueguide.finetune",
           "valueguide.generate", "valueguide.evaluate.reward_task", "valueguide.evaluate.alpaca",
           "valueguide.report.summary", "valueguide.report.tables")
CODE = struct.Struct("!i")
LENGTH = struct.Struct("!I")
POLL_S = 0.05
# How often the console hears of each running job: its progress bar's latest line, read from the job's log
# (a line per job when it moved on; a job that ends sooner prints nothing).
PROGRESS_S = 60.0
RESUMES = ("interrupted: the finished jobs are kept. Run the same command again (make run) to resume: "
           "it redoes only the jobs that were cut short.")

log = logging.getLogger(__name__)


def read_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _import_quietly(name: str) -> None:
    """Import a module in the server (its import-time warnings are the server's, not each job's)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module(name)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        if len(fds) != 3 or len(data) < LENGTH.size:
            raise ValueError("a job's request carried no streams")
        rest = read_exactly(conn, LENGTH.unpack(data[:LENGTH.size])[0] - len(data) + LENGTH.size)
        return json.loads(data[LENGTH.size:] + (rest or b"")), fds
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def _fresh_logging() -> None:
    """Logging as a new interpreter has it, so the job's own set-up applies (the server's did not)."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _become_job(request: dict, fds: list[int], close: list, run_job: Callable[[list[str]], int],
                interrupt) -> None:
    """In the forked child: take the job's streams, folder and environment, run it, exit with its status.
    ``interrupt``: what Ctrl-C does, as in a process started where the server was."""
    code = 1
    try:
        for thing in close:
            thing.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["valueguide", *request["argv"]]
        _fresh_logging()
        code = run_job(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever the job raised, reported as a fresh process would
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream cannot lose more
                pass
        os._exit(code)


class _Jobs:
    """The running children: each with the connection of its job's command."""

    def __init__(self, listener: socket.socket, run_job: Callable[[list[str]], int], modules, interrupt,
                 progress_s: float = PROGRESS_S):
        self.listener, self.run_job, self.interrupt = listener, run_job, interrupt
        self.to_import, self.asked = list(modules), False
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.children: dict[socket.socket, int] = {}
        self.logs: dict[socket.socket, list] = {}  # a job's log file and the progress line last shown of it
        self.progress_s, self.shown_at = progress_s, time.monotonic()

    def _import_next(self) -> None:
        """One module more, between jobs' requests: a job that asks meanwhile waits for one import at
        most, and imports what is still missing itself. From the first request on, so that a run with
        nothing to do imports nothing."""
        import gc

        name = self.to_import.pop(0)
        try:
            _import_quietly(name)
        except Exception as exc:  # noqa: BLE001 - the jobs that need it import it and report the error
            log.warning("warm-run could not import %s (%s): its jobs will import it themselves", name, exc)
        if not self.to_import:
            gc.collect()
            gc.freeze()  # the children share these pages instead of copying them as the collector walks them

    def start(self) -> None:
        self.asked = True
        conn, _ = self.listener.accept()
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError) as exc:
            log.warning("refused a job request: %s", exc)
            conn.close()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _become_job(request, fds, [self.selector, self.listener, conn, *self.children], self.run_job,
                        self.interrupt)
        log_file = _file_of(fds[2])
        if log_file:
            self.logs[conn] = [log_file, ""]
        for fd in fds:
            os.close(fd)
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ)
        self.children[conn] = pid

    def show_progress(self) -> None:
        """Every ``progress_s``: each running job's newest progress line, if it changed, on the console."""
        if time.monotonic() - self.shown_at < self.progress_s:
            return
        self.shown_at = time.monotonic()
        for shown in self.logs.values():
            line = _last_line(shown[0])
            if line and line != shown[1]:
                shown[1] = line
                print(f"  ... {line}", file=sys.stderr, flush=True)

    def step(self) -> None:
        """Start the jobs that asked, stop those whose command went away, answer those that ended; then,
        if nothing happened, import one more module."""
        importing = self.asked and self.to_import
        events = self.selector.select(0 if importing else POLL_S)
        for key, _ in events:
            if key.fileobj is self.listener:
                self.start()
            else:  # a job's command closed its end: it was stopped
                self._end(key.fileobj, kill=True)
        for conn, pid in list(self.children.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self._answer(conn, os.waitstatus_to_exitcode(status))
        if importing and not events:
            self._import_next()
        self.show_progress()

    def _answer(self, conn: socket.socket, code: int) -> None:
        try:
            conn.setblocking(True)
            conn.sendall(CODE.pack(code if code >= 0 else 128 - code))
        except OSError:
            pass
        self._forget(conn)

    def _end(self, conn: socket.socket, kill: bool) -> None:
        pid = self.children[conn]
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(pid, 0)
        self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        del self.children[conn]
        self.logs.pop(conn, None)
        conn.close()

    def stop_all(self) -> None:
        for conn in list(self.children):
            self._end(conn, kill=True)
        self.selector.close()


def _file_of(fd: int) -> str | None:
    """The regular file a stream writes to (a job's log: ``2> log``), None for a terminal or a pipe."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path if os.path.isfile(path) else None


PROGRESS_LINE = re.compile(r"\d+/\d+")  # a progress bar's count, "12/40" (a warning in the log is not progress)


def _last_line(path: str, tail: int = 4096) -> str:
    """The last progress line of a file, a progress bar's latest state (bars redraw with a carriage
    return; other lines, such as warnings a job logs between redraws, are passed over)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - tail))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if PROGRESS_LINE.search(line)]
    return lines[-1][:160] if lines else ""


def serve_while(command: list[str], run_job: Callable[[list[str]], int],
                modules=PRELOAD, progress_s: float = PROGRESS_S) -> int:
    """Run ``command`` with a warm job server beside it; its exit status. Interrupts go to the command
    (Snakemake stops its jobs and exits), the server stops when the command ends and, after an
    interrupt, says how to resume. Meanwhile it shows each running job's progress (``PROGRESS_S``)."""
    folder = tempfile.mkdtemp(prefix="valueguide-warm-")  # 0700: only this user's jobs reach the socket
    path = os.path.join(folder, "jobs.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(64)
        process = subprocess.Popen(command, env={**os.environ, ENV: path})
        interrupted = []
        # After the start (a handler is not inherited): Ctrl-C reaches the command itself; here it is noted.
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        # A SIGTERM to this process (a timeout, `kill`) goes to the command, whose end ends the serving.
        previous_term = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        interrupt = signal.SIG_IGN if previous == signal.SIG_IGN else signal.default_int_handler
        jobs = _Jobs(listener, run_job, modules, interrupt, progress_s)
        try:
            while process.poll() is None:
                jobs.step()
        finally:
            jobs.stop_all()
            if process.poll() is None:
                process.terminate()
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
        code = process.wait()
        if interrupted:
            print(RESUMES, file=sys.stderr, flush=True)
        return code
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
