"""MkDocs hook: serves the comparison's plots from results/ in the site.

`benchmarks/compare.py` writes its plots to `results/`, outside `docs/`;
this hook adds them to the site as `results/<name>.png`, so that the pages
link to the files the benchmark writes instead of copies of them.
"""

import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def on_files(files, config):
    """Adds every PNG in results/ to the site's files."""
    for path in sorted(RESULTS.glob("*.png")):
        files.append(
            File.generated(
                config, f"results/{path.name}", abs_src_path=str(path)
            )
        )
    return files
