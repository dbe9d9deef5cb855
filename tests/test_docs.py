"""The python code blocks of docs/*.md run: each file's blocks in order, in one namespace."""

import pathlib
import re
import sys
import types

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
# Python blocks of a page and code cells of a MyST notebook (docs/tutorials/).
_BLOCK = re.compile(r"^```(?:python|\{code-cell\} ipython3)[ \t]*\n(.*?)^```[ \t]*$",
                    re.S | re.M)


def python_blocks(text: str) -> list[str]:
  """The bodies of the fenced ```python blocks and ```{code-cell} ipython3 cells of a
  markdown text, in order."""
  return [m.group(1) for m in _BLOCK.finditer(text)]


def test_block_extraction():
  text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
  assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]
  cells = "```{code-cell} ipython3\nz = 2\n```\n```text\nno\n```\n"
  assert python_blocks(cells) == ["z = 2\n"]


PAGES = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md")),
         *sorted(DOCS.glob("tutorials/*.md"))]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(DOCS.parent)))
def test_doc_runs(path, tmp_path, monkeypatch):
  blocks = python_blocks(path.read_text())
  if not blocks:
    pytest.skip(f"{path.name} has no python blocks")
  monkeypatch.chdir(tmp_path)  # files a tutorial writes land in a scratch folder
  # A module of its own, as a script's: classes a page defines (a strategy's state) are
  # found by their module, as checkpoints look them up.
  module = types.ModuleType(f"docs_{path.stem}")
  monkeypatch.setitem(sys.modules, module.__name__, module)
  namespace = module.__dict__
  from nasjax.search import STRATEGIES

  registered = set(STRATEGIES)  # every module imported first
  try:
    _run_blocks(path, blocks, namespace)
  finally:  # what the page registered does not outlive it
    for name in set(dict.keys(STRATEGIES)) - registered:
      dict.pop(STRATEGIES, name)


def _run_blocks(path, blocks, namespace):
  for k, block in enumerate(blocks):
    code = compile(block, f"{path.name} [python block {k + 1}]", "exec")
    exec(code, namespace)  # noqa: S102 - running the documentation is the point


def test_the_documentation_builds_without_warnings(tmp_path):
  # Sphinx with warnings as errors: a broken link between pages, a cross-reference to
  # nothing or a malformed docstring in the API reference fails the build.
  import subprocess
  import sys

  proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W",
                         "--keep-going", str(DOCS), str(tmp_path / "html")],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert (tmp_path / "html" / "api.html").stat().st_size > 50_000
