"""Set-up and task runner that needs nothing but Python.

    python3 dev.py demo    # prune a ResNet on the embedded digits data
    python3 dev.py test    # run the test suite
    python3 dev.py bench   # run the benchmarks in benchmarks/
    python3 dev.py docs    # build the documentation site into site/
    python3 dev.py test --quick   # the suite without end-to-end runs

Each task creates `.venv` (and installs the package with its test, plot,
deploy and docs extras: the deployment runtimes and the docs build the
tests run) when it is missing or
older than `setup.py`, then runs inside it. Extra arguments are passed on,
e.g. `python3 dev.py test -k flops`.
"""

import os
import pathlib
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"
PYTHON = VENV / "bin" / "python"

TASKS = {
    "demo": ["examples/demo.py"],
    "test": ["-m", "pytest", "tests"],
    "bench": ["benchmarks/run_all.py"],
    "docs": ["-m", "mkdocs", "build", "--strict", "--site-dir", "site"],
}


def ensure_venv():
    """Creates the virtual environment and installs the package if needed."""
    fresh = STAMP.exists() and (
        STAMP.stat().st_mtime >= (ROOT / "setup.py").stat().st_mtime
    )
    if fresh:
        return
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing ekg_keras and its dependencies ...", flush=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            ".[test,plot,deploy,docs]",
        ],
        cwd=ROOT,
        check=True,
    )
    STAMP.touch()


def main(argv):
    if len(argv) < 2 or argv[1] not in TASKS:
        print(f"usage: python3 dev.py {{{'|'.join(TASKS)}}} [args...]")
        return 2
    ensure_venv()
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    extra = argv[2:]
    if argv[1] == "test" and "--quick" in extra:
        extra = [a for a in extra if a != "--quick"] + ["-m", "not slow"]
    command = [str(PYTHON), *TASKS[argv[1]], *extra]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
