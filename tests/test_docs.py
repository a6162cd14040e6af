"""The documentation site builds strictly, and the README stays a summary.

`mkdocs build --strict` (what `python3 dev.py docs` runs) fails on a link
to a missing page, a missing anchor or an API reference that does not
resolve, so a page moved or renamed without its links breaks this test.
"""

import os
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMANDS = ("python3 dev.py demo", "python3 dev.py test")


def _build(config, site_dir):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    result = _build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = []

    def collect(entries):
        for entry in entries:
            for value in entry.values():
                if isinstance(value, list):
                    collect(value)
                else:
                    pages.append(value)

    collect(config["nav"])
    assert "api.md" in pages
    for page in pages:
        html = page[: -len(".md")] + "/index.html"
        if page == "index.md":
            html = "index.html"
        assert (site / html).is_file(), html
    # Every page under docs/ is in the navigation.
    on_disk = {
        p.relative_to(ROOT / "docs").as_posix()
        for p in (ROOT / "docs").rglob("*.md")
    }
    assert on_disk == set(pages)
    # The API reference is rendered from the docstrings.
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("prune.prune", "methods.ekg.method.EKGSearch"):
        assert f'id="ekg_keras.{name}"' in api, name
    # The comparison's plots come from results/ (docs/hooks.py).
    assert (site / "results" / "compare_accuracy_flops.png").is_file()


def test_broken_links_and_references_fail_the_build(tmp_path):
    """The site's settings turn each kind of broken link into a failure."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Home\n\n[a page](missing.md), [an anchor](other.md#missing), "
        "[a reference][ekg_keras.missing]\n"
    )
    (docs / "other.md").write_text("# Other\n")
    for key in ("nav", "hooks", "exclude_docs"):
        config.pop(key)
    config["docs_dir"] = str(docs)
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "'missing.md'" in output, output
    assert "'#missing'" in output, output
    assert "ekg_keras.missing" in output, output


def test_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 300, len(lines)
    first_block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    commands = first_block.group(1).splitlines()
    assert [c.split("#")[0].strip() for c in commands] == list(COMMANDS)
    # Nothing but the title comes before them.
    before = text[: first_block.start()].strip().splitlines()
    assert len(before) == 1 and before[0].startswith("# "), before


def test_readme_links_point_to_files_that_exist():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    for target in local:
        assert (ROOT / target).exists(), target
