"""Runs every benchmark in `benchmarks/`, each in its own process.

    python3 dev.py bench               # full runs (a few minutes on 2 cores)
    python3 dev.py bench --quick       # smoke check: fewer repetitions
    .venv/bin/python benchmarks/run_all.py --only slim_speedup

A benchmark is any `benchmarks/<name>.py` not starting with `_` (other than
this file and the shared helpers of `common.py`); it must accept `--quick`
and `--json PATH`. Each runs in a fresh interpreter, so that TensorFlow's
thread settings and memory do not leak from one to the next. Their output
is printed as it comes; TensorFlow's start-up chatter on stderr is dropped
unless a benchmark fails. Exits with 1 if any benchmark fails (non-zero
exit status), else 0.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
#: Scripts beside the benchmarks that are not benchmarks.
NOT_BENCHMARKS = ("run_all.py", "common.py")

# Lines TensorFlow prints to stderr at start-up, before its log level applies.
_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Unable to register cu",
    "computation placer already registered",
    "This TensorFlow binary is optimized",
    "To enable the following instructions",
)


def discover():
    """Names of the benchmark scripts, sorted."""
    return sorted(
        path.stem
        for path in HERE.glob("*.py")
        if not path.stem.startswith("_") and path.name not in NOT_BENCHMARKS
    )


def run_one(name, extra_args):
    """Runs one benchmark; returns (exit code, seconds, figures or None)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    with tempfile.TemporaryDirectory() as tmp:
        json_path = os.path.join(tmp, f"{name}.json")
        command = [
            sys.executable,
            str(HERE / f"{name}.py"),
            *extra_args,
            "--json",
            json_path,
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=None,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, stderr = proc.communicate()
        seconds = time.perf_counter() - start
        figures = None
        if os.path.exists(json_path):
            with open(json_path) as f:
                figures = json.load(f)
    lines = stderr.splitlines()
    if proc.returncode != 0:
        shown = lines
    else:
        shown = [
            line
            for line in lines
            if line.strip() and not any(n in line for n in _NOISE)
        ]
    if shown:
        print("\n".join(shown), file=sys.stderr, flush=True)
    return proc.returncode, seconds, figures


def main(argv=None):
    """Runs the benchmarks; returns {name: {"returncode", "seconds", ...}}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="pass --quick to every benchmark (smoke check)",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated benchmark names to run"
    )
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
        names = [name for name in names if name in wanted]
    extra = ["--quick"] if args.quick else []
    results = {}
    for name in names:
        print(f"\n##### {name} {' '.join(extra)}".rstrip(), flush=True)
        code, seconds, figures = run_one(name, extra)
        results[name] = {
            "returncode": code,
            "seconds": seconds,
            "figures": figures,
        }
    print("\n##### summary")
    for name, res in results.items():
        status = (
            "ok"
            if res["returncode"] == 0
            else (f"FAILED (exit {res['returncode']})")
        )
        summary = (res["figures"] or {}).get("summary", "")
        print(f"{name:22s} {status:8s} {res['seconds']:6.1f} s  {summary}")
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if all(r["returncode"] == 0 for r in outcome.values()) else 1)
