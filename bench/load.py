"""What else ran on the host while a round was timed, for the bench scripts of either library
(no dependencies, Linux).

A round's `others_cpu_share` is the CPU time the host spent outside this process during the
round, as a share of all its cores over the round's wall time (from /proc/stat and this
process's own CPU time). A benchmark measured while other processes take a fifth of the host
or more is not the program's speed: such a round is `disturbed` and is repeated or marked,
never summarised as a normal one.
"""

import os
import time

DISTURBED_SHARE = 0.2  # of the host's cores, taken by other processes during a round


def _host_busy_seconds():
    """CPU seconds all cores spent busy since boot (None where /proc/stat is absent)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    times = os.times()
    return times.user + times.system


class Round:
    """`with Round() as r: work()`, then `r.seconds` (wall), `r.others_cpu_share` (None where
    it cannot be read) and `r.disturbed`."""

    def __enter__(self):
        self._start = (time.perf_counter(), _host_busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = time.perf_counter(), _host_busy_seconds(), _own_seconds()
        self.seconds = wall - self._start[0]
        if busy is None or self._start[1] is None or self.seconds <= 0:
            self.others_cpu_share = None
        else:
            others = (busy - self._start[1]) - (own - self._start[2])
            share = others / (self.seconds * (os.cpu_count() or 1))
            self.others_cpu_share = round(max(share, 0.0), 3)
        self.disturbed = bool(self.others_cpu_share is not None
                              and self.others_cpu_share >= DISTURBED_SHARE)
        return False


def timed_rounds(run, repeats):
    """Times `run()` (one round of timed work) until `repeats` rounds were undisturbed, or
    2 × `repeats` rounds ran: (the undisturbed rounds, or every round when none was; every
    round). A disturbed round is reported (`others_cpu_share`), never summarised as normal."""
    rounds = []
    while sum(not r.disturbed for r in rounds) < repeats and len(rounds) < 2 * repeats:
        with Round() as timed:
            run()
        rounds.append(timed)
    return [r for r in rounds if not r.disturbed] or rounds, rounds


def round_fields(kept, rounds, images_per_round):
    """The JSON fields both libraries' timers print: images/s of the kept rounds (median and
    each), every round's others_cpu_share, and `disturbed` when no round was undisturbed."""
    rates = sorted(images_per_round / r.seconds for r in kept)
    return dict(train_images_per_s=round(rates[len(rates) // 2], 2),
                train_images_per_s_runs=[round(v, 2) for v in rates],
                others_cpu_share_runs=[r.others_cpu_share for r in rounds],
                disturbed=all(r.disturbed for r in rounds))
