"""Peak resident memory of this process on Linux, for the memory benchmarks.

The kernel keeps a peak-RSS mark (VmHWM); writing "5" to /proc/self/clear_refs resets it to the current
RSS. So `base = reset_peak_rss(); work(); peak_rss() - base` is what `work` allocated at its peak,
including every tensor autograd kept alive. Measure each case in a fresh process: freed memory that the
allocator keeps for reuse would hide later allocations.
"""


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss():
    """Reset the peak mark to the current RSS and return that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def peak_rss():
    """Peak RSS in bytes since the last reset (or since the process started)."""
    return _status_kb("VmHWM") * 1024
