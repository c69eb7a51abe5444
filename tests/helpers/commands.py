"""The repository's commands (`train.py`, `eval.py`) run in a subprocess, as a user runs them."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def run_command(script, *args, timeout=600, env=None, memory_limit=None):
    """`python <script> args…` in the repository root: the CompletedProcess, text output.
    `memory_limit`: bytes of data memory the process may hold (RLIMIT_DATA: its heap and
    private mappings; beyond it, allocations fail)."""
    command = [sys.executable, str(ROOT / script), *map(str, args)]
    if memory_limit:  # (set in the child itself, which then becomes the command: no preexec_fn)
        command = [sys.executable, "-c", LIMITED, str(int(memory_limit)), *command]
    return subprocess.run(command, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_DATA, (limit, limit)); "
           "os.execv(sys.argv[2], sys.argv[2:])")


def train(*args, timeout=600, memory_limit=None):
    return run_command("train.py", *args, timeout=timeout, memory_limit=memory_limit)


def evaluate(*args, timeout=600, memory_limit=None):
    return run_command("eval.py", *args, timeout=timeout, memory_limit=memory_limit)


def timed_lines(script, *args, timeout=600):
    """Runs `python <script> args…` as `run_command` does, reading its output (stdout and
    stderr together) as it comes: (return code, [(seconds since the start, line)]). TensorFlow's
    C++ log lines are left out."""
    import time

    started = time.time()
    process = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        if not line.startswith(("E0000", "W0000", "I0000")):
            lines.append((time.time() - started, line.rstrip("\n")))
    process.wait(timeout=timeout)
    return process.returncode, lines
