"""torchslim in real processes: single-threaded subprocesses, real SIGKILLs, and the CLI fork server.

A kill test must kill: an exception raised in-process still runs ``finally`` blocks (and context
managers) that a SIGKILL skips, so it cannot show that nothing is lost when a process dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child: one thread (parallel processes do not thrash), unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def torchslim(*args: str, timeout: float = 240, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m torchslim ARGS`` run to completion (in the repository root unless ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "torchslim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        cwd=cwd,
    )


def popen_torchslim(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    """``python -m torchslim ARGS`` started in the background (to be killed); stdout is not kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "torchslim", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
    )


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in the repository root, so that the code can import ``tests.helpers``."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        cwd=REPO,
    )


def torchrun(*args: str, monitor_interval: float = 0.1) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (single-threaded ranks) run to completion."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["--monitor-interval", str(monitor_interval), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=REPO
    )


def assert_killed(result: subprocess.CompletedProcess) -> None:
    """The child died of SIGKILL (not of an exception, not by exiting)."""
    assert result.returncode == -signal.SIGKILL, (
        f"exit {result.returncode}, expected death by SIGKILL:\n{result.stderr[-3000:]}"
    )


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds; fails when it exits first or never gets there."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, (
                f"exited ({process.returncode}) too early:\n{process.communicate()[1]}"
            )
            assert time.monotonic() < deadline, f"not ready within {timeout} s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def first_checkpoint_written(checkpoint: Path) -> Callable[[], bool]:
    return lambda: (checkpoint / "0" / "MANIFEST.json").exists()


# ---------------------------------------------------------------- the CLI fork server

# Reads one JSON job per line and runs ``python -m torchslim ARGV`` in a forked child, whose
# stdout and stderr go to files; answers with the child's real exit status.
SERVER = r"""
import json, os, runpy, sys, time, traceback
import torchslim.cli.main  # noqa: F401  (the expensive imports, paid once)

for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.chdir(job["cwd"])
            os.environ.update(job["env"])
            sys.argv = ["torchslim", *job["argv"]]
            try:
                runpy.run_module("torchslim", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit:  # what the interpreter does with it
                if exit.code is None or isinstance(exit.code, int):
                    code = exit.code or 0
                else:
                    print(exit.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + job["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            done, status = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""

# Set TORCHSLIM_TEST_PLAIN_SUBPROCESS=1 to run every CLI case in a fresh interpreter instead.
PLAIN = os.environ.get("TORCHSLIM_TEST_PLAIN_SUBPROCESS") == "1"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


class CliServer:
    """``python -m torchslim`` forked from one process that paid for the imports once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.count = 0
        self.log = open(work / "server.stderr", "w")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=subprocess_env(),
            cwd=REPO,
        )

    def __call__(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 240) -> Run:
        self.count += 1
        out, err = self.work / f"{self.count}.stdout", self.work / f"{self.count}.stderr"
        job = {
            "argv": list(argv),
            "env": env or {},
            "cwd": str(REPO),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(
                f"the CLI fork server died: {(self.work / 'server.stderr').read_text()[-3000:]}"
            )
        return Run(json.loads(reply)["returncode"], out.read_text(), err.read_text())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


def plain_cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 240) -> Run:
    """``python -m torchslim ARGV`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "torchslim", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**(env or {})),
        cwd=REPO,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def error_line(run: Run, command: str, exit_code: int, *needles: str) -> str:
    """The one error line of a failed run; checks exit code, no traceback, and that it names ``needles``."""
    assert run.returncode == exit_code, (
        f"exit {run.returncode}, expected {exit_code}; stderr:\n{run.stderr[-3000:]}"
    )
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    prefix = f"torchslim {command}: error: "
    lines = [line for line in run.stderr.splitlines() if line.strip()]  # \r of progress bars splits too
    errors = [line for line in lines if prefix in line]
    assert len(errors) == 1 and lines[-1] == errors[0], run.stderr[-3000:]
    message = errors[0].split(prefix, 1)[1]
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in: {message}"
    return message
