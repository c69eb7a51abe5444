"""The bench's guard against other processes' load (bench/load.py): a timed round beside a
busy-loop process is marked disturbed and repeated, never summarised as a normal one."""

import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import load  # noqa: E402


def spin(seconds=1.5):
    import time

    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1
    return x


@pytest.mark.skipif(not pathlib.Path("/proc/stat").exists(), reason="reads /proc/stat")
def test_a_round_beside_a_busy_loop_is_disturbed_and_repeated():
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(max(1, (load.os.cpu_count() or 1) // 2))]
    try:
        with load.Round() as timed:
            spin()
        kept, rounds = load.timed_rounds(spin, repeats=2)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert timed.others_cpu_share >= load.DISTURBED_SHARE and timed.disturbed
    assert len(rounds) == 4 and all(r.disturbed for r in rounds)  # repeated, then given up
    fields = load.round_fields(kept, rounds, images_per_round=100)
    assert fields["disturbed"] and len(fields["others_cpu_share_runs"]) == 4
    assert 0 < timed.seconds < 10
