"""This process's memory, for the bench scripts of either library (no dependencies).

`peak_rss_mb` is the kernel's high-water mark of resident memory (`ru_maxrss`). Part of any
RSS is shared-library code mapped from files, and how much of a library gets mapped depends
on the page cache's history, not on the program: on Linux 6.18 / ext4, TensorFlow's
libraries freshly written by pip mapped 474 MB at import, the same files re-read from disk
after the cache was dropped 356 MB. So every line also splits the current RSS into
anonymous memory (the program's own) and file-backed pages, and `compare_peer.py
--drop_caches` starts every run from an empty page cache.
"""

import resource


def memory_mb():
    """`{"peak_rss_mb", "rss_anon_mb", "rss_file_mb"}` (MiB; the split is the current
    RSS, from /proc/self/status; absent where that file is)."""
    out = dict(peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[f"rss_{key[3:].lower()}_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out
