"""What the peer comparisons share: running one bench process, and appending results."""

import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(command, env=None):
    """Runs `command` from the repository root (TensorFlow's logs quiet; `env`: more
    variables); returns (its stdout, wall seconds). A failure raises with the end of its
    stderr."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout, time.perf_counter() - start


def drop_page_cache():
    """Empties Linux's page cache (root only), so that every run maps its libraries'
    code from the same state; see bench/memory.py for why peak RSS depends on it."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        raise RuntimeError(f"--drop_caches needs root on Linux: {e}") from e


def step_flags(args, precision):
    """The flags both step scripts (bench_train_step.py, peer_byol_pytorch.py) take from a
    driver's `args`: the network, batch, image size, steps, warm-up, precision, augmentation."""
    return [f"--encoder={args.encoder}", f"--batch_size={args.batch_size}",
            f"--image_size={args.image_size}", f"--steps={args.steps}",
            f"--warmup={args.warmup}", f"--precision={precision}",
            "--augment" if args.augment else "--noaugment"]


def last_json(stdout):
    """The JSON object on the last line of a bench process's stdout."""
    return json.loads(stdout.strip().splitlines()[-1])


def report(lines, summary, out):
    """Prints the summary; with `out`, appends every line and the summary to it (JSON lines).
    A summary with disturbed rounds (other processes' load, bench/load.py) says so first."""
    if summary.get("disturbed_rounds"):
        print(f"DISTURBED: rounds {summary['disturbed_rounds']} ran beside other processes' "
              f"load (up to {summary.get('others_cpu_share_max')} of the host's CPU); rerun on "
              "a quiet host before comparing", file=sys.stderr)
    print(json.dumps(summary))
    if out:
        with open(out, "a") as f:
            for line in lines + [summary]:
                f.write(json.dumps(line) + "\n")
