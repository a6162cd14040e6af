"""Set-up and task runner that needs nothing but Python.

    python3 dev.py demo    # prune a ResNet on the embedded digits data
    python3 dev.py test    # run the test suite
    python3 dev.py bench   # run the benchmarks in benchmarks/
    python3 dev.py docs    # build the documentation site into site/
    python3 dev.py test --quick   # the suite without end-to-end runs
    python3 dev.py test --latest  # the suite on the newest releases

Each task creates `.venv` (and installs the package with its test, plot,
deploy and docs extras: the deployment runtimes and the docs build the
tests run) when it is missing or older than `setup.py` or
`constraints.txt`, then runs inside it. The install is pinned to
`constraints.txt`, the versions the suite last passed with; `--latest`
uses `.venv-latest`, upgraded to the newest releases on every call.
Extra arguments are passed on, e.g. `python3 dev.py test -k flops`.
"""

import os
import pathlib
import subprocess
import sys
import urllib.request
import venv

ROOT = pathlib.Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints.txt"
# torch's CPU wheel (the default index gives the CUDA one, gigabytes).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = ".[test,plot,deploy,docs]"

TASKS = {
    "demo": ["examples/demo.py"],
    # One worker per core; a test module stays on one worker, so its
    # module-scoped fixtures (a trained network, a search) run once. The
    # modules go out in tests/conftest.py's order (longest first), not
    # xdist's default (most tests first, which left the long end-to-end
    # modules for last and one worker idle at the end).
    "test": [
        "-m",
        "pytest",
        "-n",
        "auto",
        "--dist",
        "loadfile",
        "--no-loadscope-reorder",
        "tests",
    ],
    "bench": ["benchmarks/run_all.py"],
    "docs": ["-m", "mkdocs", "build", "--strict", "--site-dir", "site"],
}


def torch_index():
    """The PyTorch CPU index as pip arguments, when it answers.

    Offline machines with a local mirror (pip's own configuration) get no
    extra index: pip would retry an unreachable one on every requirement,
    which made an install take many minutes instead of one or two.
    """
    try:
        urllib.request.urlopen(TORCH_CPU_INDEX, timeout=3).close()
    except OSError:
        return []
    return ["--extra-index-url", TORCH_CPU_INDEX]


def ensure_venv(latest=False):
    """Creates the virtual environment and installs the package if needed.

    Returns:
        The environment's Python executable.
    """
    venv_dir = ROOT / (".venv-latest" if latest else ".venv")
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / ".installed"
    inputs = (ROOT / "setup.py", CONSTRAINTS)
    fresh = stamp.exists() and all(
        stamp.stat().st_mtime >= path.stat().st_mtime for path in inputs
    )
    if fresh and not latest:
        return python
    if not python.exists():
        print(f"Creating {venv_dir} ...", flush=True)
        venv.create(venv_dir, with_pip=True)
    if latest:
        print("Installing the newest releases ...", flush=True)
        pins = ["--upgrade", "--upgrade-strategy", "eager"]
    else:
        print("Installing ekg_keras and its dependencies ...", flush=True)
        pins = ["-c", str(CONSTRAINTS)]
    command = [str(python), "-m", "pip", "install", "-q", *pins]
    command += torch_index()
    subprocess.run([*command, "-e", EXTRAS], cwd=ROOT, check=True)
    stamp.touch()
    return python


def _is_test_path(argument):
    """Whether a pytest argument names tests (a file, a directory or a
    node id such as `tests/test_flops.py::test_x`)."""
    return not argument.startswith("-") and (
        pathlib.Path(argument.split("::")[0]).exists()
    )


def main(argv):
    if len(argv) < 2 or argv[1] not in TASKS:
        print(f"usage: python3 dev.py {{{'|'.join(TASKS)}}} [args...]")
        return 2
    extra = argv[2:]
    python = ensure_venv(latest="--latest" in extra)
    extra = [a for a in extra if a != "--latest"]
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    if argv[1] == "test" and "--quick" in extra:
        extra = [a for a in extra if a != "--quick"] + ["-m", "not slow"]
    task = TASKS[argv[1]]
    if argv[1] == "test" and any(_is_test_path(a) for a in extra):
        # `python3 dev.py test tests/test_docs.py` runs that file only.
        task = [a for a in task if a != "tests"]
    command = [str(python), *task, *extra]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
