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
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))

    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if memory_limit else None)


def train(*args, timeout=600, memory_limit=None):
    return run_command("train.py", *args, timeout=timeout, memory_limit=memory_limit)


def evaluate(*args, timeout=600, memory_limit=None):
    return run_command("eval.py", *args, timeout=timeout, memory_limit=memory_limit)
