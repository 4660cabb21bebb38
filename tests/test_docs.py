"""The documentation builds offline with warnings as errors, and stays in step with examples/.

The build runs on a copy of ``docs/`` and ``examples/`` in a temporary folder, so that
autosummary's generated pages never land in the source tree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"


def _sphinx_missing() -> str | None:
    for module in ("sphinx", "numpydoc"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[docs]')"
    return None


def test_every_example_is_shown_in_the_docs():
    page = (DOCS / "examples.rst").read_text(encoding="utf-8")
    included = set(re.findall(r"literalinclude:: \.\./examples/(\w+\.py)", page))
    assert included == {script.name for script in EXAMPLES.glob("*.py")}


def test_every_user_guide_page_is_in_the_toctree():
    index = (DOCS / "user_guide" / "index.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([\w./]+)$", index, flags=re.MULTILINE))
    pages = {page.stem for page in (DOCS / "user_guide").glob("*.rst")} - {"index"}
    assert pages <= listed, f"pages missing from the user guide's toctree: {pages - listed}"


def test_every_public_exception_and_warning_is_in_the_api_reference():
    import skdeep

    reference = (DOCS / "api" / "index.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (\w+)$", reference, flags=re.MULTILINE))
    errors = {name for name in skdeep.__all__ if isinstance(getattr(skdeep, name), type)
              and issubclass(getattr(skdeep, name), (Exception, Warning))}
    assert "ImageNotFoundError" in errors and errors <= listed, errors - listed


def _make_recipe(target: str) -> str:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE).group(1)


def test_readme_and_getting_started_say_what_make_run_and_make_bench_run():
    assert "skdeep evaluate" in _make_recipe("run")
    for page in (ROOT / "README.md", DOCS / "getting_started.rst"):
        lines = [line for line in page.read_text(encoding="utf-8").splitlines()
                 if re.match(r"\s*make run\b", line)]
        assert lines and all("skdeep evaluate" in line for line in lines), (page, lines)
    benchmarks = set(re.findall(r"bench_\w+\.py", _make_recipe("bench")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("one script per claim"):readme.index("make bench")]
    assert set(re.findall(r"bench_\w+\.py", listed)) == benchmarks


def test_conf_fetches_nothing():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "sphinx.ext.intersphinx" not in conf, "intersphinx fetches inventories; build offline"


def test_docs_build_without_warnings(tmp_path):
    reason = _sphinx_missing()
    if reason:
        pytest.skip(reason)
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build", "generated"))
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(tmp_path / "docs"), str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (
        f"sphinx-build failed:\n{result.stdout[-3000:]}\n{result.stderr[-8000:]}"
    )
    # The API reference really documents the estimators, their methods and their parameters.
    generated = out / "api" / "generated"
    page = (generated / "skdeep.PretrainedCNNFeatures.html").read_text(encoding="utf-8")
    assert 'id="skdeep.PretrainedCNNFeatures.transform"' in page
    assert "on_error" in page
    assert (generated / "skdeep.FineTunedCNNClassifier.html").is_file()
    assert (out / "examples.html").read_text(encoding="utf-8").count("SKDEEP_EXAMPLE_SMALL") >= 6
