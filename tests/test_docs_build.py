"""The documentation's references and examples stay true to the code.

The strict site build itself runs in CI (``make docs``). Here, quickly: every object an API
reference page names imports, every snippet a page includes exists with its section markers,
every tutorial script compiles; and (slow) the tutorial scripts that need no large model run
to the end, asserting what their pages claim.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE = DOCS / "tutorials" / "code"

REFERENCE_DIRECTIVE = re.compile(r"^::: *([\w.]+) *$", re.MULTILINE)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)
# Scripts that run in well under a minute on the bundled data. text.py (trains a head on the
# real MiniLM), generation.py (the real SmolLM2: minutes) and audit_cli.sh (four CLI
# processes) are left out: they were run by hand when written.
FAST_SCRIPTS = [
    "tabular.py",
    "image.py",
    "global_explanations.py",
    "evaluate.py",
    "audit.py",
    "server.py",
    "frameworks.py",
    "keras_model.py",
    "extensions.py",
]


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _reference_targets() -> list[str]:
    targets = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        targets += REFERENCE_DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    return targets


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_reference_pages_name_objects():
    targets = _reference_targets()
    assert "dlbacktrace" in targets and len(targets) >= 10


@pytest.mark.parametrize("dotted", _reference_targets())
def test_reference_target_imports(dotted):
    assert _resolve(dotted) is not None


def test_snippet_includes_exist():
    includes = []
    for page in _pages():
        for ref in SNIPPET.findall(page.read_text(encoding="utf-8")):
            path, _, section = ref.partition(":")
            includes.append((page.name, path, section))
    assert len(includes) >= 30, includes
    for page, path, section in includes:
        source = DOCS / path
        assert source.is_file(), f"{page} includes a missing file {path}"
        if section:
            text = source.read_text(encoding="utf-8")
            for marker in (f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"):
                assert text.count(marker) == 1, f"{page}: {path} needs one {marker!r}"


def test_every_tutorial_script_is_included_and_compiles():
    pages = "\n".join(p.read_text(encoding="utf-8") for p in _pages())
    scripts = sorted(CODE.glob("*.py"))
    assert scripts
    for script in scripts:
        compile(script.read_text(encoding="utf-8"), str(script), "exec")
        assert f"tutorials/code/{script.name}" in pages, f"{script.name} is on no page"


def test_fast_scripts_exist():
    assert all((CODE / name).is_file() for name in FAST_SCRIPTS)


# One process runs every script in turn (each in a fresh folder and namespace), so torch and
# friends are imported once; extensions.py registers global extensions, so it runs last.
RUNNER = """
import os, runpy, sys, traceback
work, code = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    folder = os.path.join(work, name.rsplit(".", 1)[0])
    os.makedirs(folder)
    os.chdir(folder)
    try:
        runpy.run_path(os.path.join(code, name), run_name="__main__")
    except BaseException:
        sys.stderr.write(f"tutorial script {name} failed:\\n{traceback.format_exc()}")
        sys.exit(1)
"""


@pytest.mark.slow
def test_tutorial_scripts_run(tmp_path):
    """Each script asserts the facts its page states (ledgers, shapes, bit-identical reruns)."""
    assert FAST_SCRIPTS[-1] == "extensions.py"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    env["KERAS_BACKEND"] = "torch"  # keras_model.py: Keras on its torch backend
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path), str(CODE), *FAST_SCRIPTS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_roles_become_optional_references():
    hooks = _hooks()
    page = ("see :class:<code>~dlbacktrace.Backtrace</code>, :func:<code>dlbacktrace.explain"
            "</code>, :meth:<code>~dlbacktrace.engine.rules.\nspec.Family</code> and "
            ":mod:<code>.routes</code>; <code>plain</code>")
    out = hooks.on_page_content(page)
    assert out == (
        'see <autoref identifier="dlbacktrace.Backtrace" optional><code>Backtrace</code>'
        '</autoref>, <autoref identifier="dlbacktrace.explain" optional><code>'
        'dlbacktrace.explain</code></autoref>, <autoref identifier='
        '"dlbacktrace.engine.rules.spec.Family" optional><code>Family</code></autoref> and '
        "<code>routes</code>; <code>plain</code>"
    )
