"""Small helpers shared by the benchmark scripts (not part of the library).

Importing this module silences TensorFlow's C++ logging, so import it before
TensorFlow, Keras or `ekg_keras`.
"""

import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # Run from a checkout without installing.
    sys.path.insert(0, _ROOT)


def percentile(values, q):
    """The `q`-th percentile (0..100) of `values`, linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(seconds):
    """Median, p95, min and mean of per-call times given in seconds."""
    return {
        "median_s": statistics.median(seconds),
        "p95_s": percentile(seconds, 95),
        "min_s": min(seconds),
        "mean_s": statistics.fmean(seconds),
        "n": len(seconds),
    }


def time_calls(fn, args_list):
    """Times `fn(args)` for each element of `args_list`, one by one.

    Returns:
        The list of per-call wall-clock times in seconds.
    """
    clock = time.perf_counter
    times = []
    for args in args_list:
        start = clock()
        fn(args)
        times.append(clock() - start)
    return times


def time_once(fn, *args, **kwargs):
    """Runs `fn` once and returns `(result, seconds)`."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def fmt_seconds(seconds):
    """A duration with a readable unit (us, ms or s)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table(header, rows, left=1):
    """Formats rows as an aligned plain-text table.

    The first `left` columns are left-aligned, the others right-aligned.
    """
    rows = [list(map(str, row)) for row in rows]
    widths = [
        max(len(str(h)), *(len(row[i]) for row in rows))
        for i, h in enumerate(header)
    ]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)), line]
    for row in rows:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        out.append("  ".join(cells))
    return "\n".join(out)


def environment():
    """A dict describing the machine and library versions."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def environment_line(env):
    """One line summarising `environment()`."""
    return (
        f"{env['date']}  python {env['python']}  tensorflow "
        f"{env['tensorflow']}  keras {env['keras']}  numpy {env['numpy']}  "
        f"{env['cpu_count']} CPU cores ({env['machine']}), "
        f"{env['gpus']} GPU"
    )


def cpu_snapshot():
    """Busy CPU seconds of the whole machine and of this process, now.

    The machine's figure comes from /proc/stat (Linux); elsewhere it is
    None and `other_load` reports nothing.
    """
    own = os.times()
    machine = None
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        machine = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return {
        "wall": time.perf_counter(),
        "own": own.user + own.system,
        "machine": machine,
    }


def other_load(before, after):
    """Average cores used by this process and by all others in between.

    Returns:
        `(own_cores, other_cores)`; `other_cores` is None without
        /proc/stat. Other processes running at the same time make the
        timings of a multi-threaded benchmark noisy.
    """
    wall = max(after["wall"] - before["wall"], 1e-9)
    own = (after["own"] - before["own"]) / wall
    if before["machine"] is None or after["machine"] is None:
        return own, None
    machine = (after["machine"] - before["machine"]) / wall
    return own, max(machine - own, 0.0)


def load_warning(other_cores, cpu_count, consequence):
    """A warning line when other processes used the CPU, else None.

    Args:
        other_cores: Cores used by other processes per measurement (None
            where unknown).
        cpu_count: Cores of the machine.
        consequence: What the load did to the figures, for the message.
    """
    busy = [cores for cores in other_cores if cores is not None]
    if not busy or max(busy) <= 0.25:
        return None
    return (
        f"WARNING: other processes used up to {max(busy):.2f} of the "
        f"{cpu_count} cores while timing; {consequence}"
    )


def base_parser(description, quick_help):
    """The arguments every benchmark accepts: --json and --quick."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--json", default=None, help="also write the figures to this JSON file"
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def write_json(path, result):
    """Writes `result` as JSON to `path` (no-op for None)."""
    if path is None:
        return
    with open(path, "w") as out:
        json.dump(result, out, indent=1, default=_jsonable)


def _jsonable(value):
    if hasattr(value, "tolist"):  # NumPy scalars and arrays.
        return value.tolist()
    return str(value)
