"""nasjax report's report.html: one self-contained page whose numbers are the history's."""

import html.parser
import json
import math

import pytest

from nasjax.search import PlainCNNSpace, TrainingEvaluator, read_history, run
from nasjax.search.report import report


class _Tables(html.parser.HTMLParser):
  """Cells of every table by id, images and whether the page loads anything external."""

  def __init__(self):
    super().__init__()
    self.tables, self.images, self.external, self.svg = {}, [], [], 0
    self._table = self._row = self._cell = None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "table":
      self._table = self.tables.setdefault(attrs.get("id"), [])
    elif tag == "tr" and self._table is not None:
      self._row = []
      self._table.append(self._row)
    elif tag in ("td", "th") and self._row is not None:
      self._cell = []
    elif tag == "img":
      self.images.append(attrs.get("src", ""))
    elif tag == "svg":
      self.svg += 1
    for key in ("src", "href"):
      if key in attrs and not attrs[key].startswith("data:"):
        self.external.append(attrs[key])

  def handle_endtag(self, tag):
    if tag in ("td", "th") and self._cell is not None:
      self._row.append("".join(self._cell))
      self._cell = None
    elif tag == "table":
      self._table = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell.append(data)


def test_report_html_holds_every_evaluation_and_loads_nothing(tmp_path):
  space = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4, 8), kernels=(1, 3))
  evaluator = TrainingEvaluator(space, dataset="synthetic", objectives=("val_error", "params"),
                                train={"epochs": 1, "batch_size": 32})
  run("random", evaluator, 3, tmp_path, seed=0, quiet=True)
  summary = report(tmp_path)
  page = _Tables()
  page.feed((tmp_path / "report.html").read_text())
  history = read_history(tmp_path)
  rows = page.tables["evaluations"]
  head, body = rows[0], rows[1:]
  assert head[:5] == ["eval", "generation", "status", "val_error", "params"]
  assert len(body) == len(history) == 3
  for row, entry in zip(body, history):
    assert int(row[0]) == entry["eval"] and row[2] == entry["status"]
    for i, name in ((3, "val_error"), (4, "params")):
      assert float(row[i]) == pytest.approx(entry["objectives"][name], rel=1e-5)
    assert float(row[5]) == pytest.approx(entry["cost"], rel=1e-5)
    arch = entry["arch"]
    assert row[-1] == (arch if isinstance(arch, str) else json.dumps(arch))
  summary_rows = dict(r[:2] for r in page.tables["summary"])
  assert int(summary_rows["evaluations"]) == 3
  assert math.isclose(float(summary_rows["charged_seconds"]), summary["charged_seconds"],
                      rel_tol=1e-5)
  # The plots are embedded, the best architecture drawn inline, nothing fetched.
  assert len(page.images) == len([p for p in summary["plots"] if p.endswith(".png")]) >= 3
  assert all(src.startswith("data:image/png;base64,") for src in page.images)
  assert page.svg >= 1 and page.external == []


def test_report_html_renders_in_headless_chromium(tmp_path):
  """docs/report_screenshot.py renders the page in a real browser (skipped where no
  Chromium is installed): a full-size screenshot with content, and the DOM the browser
  built holds every evaluation."""
  import importlib.util
  import pathlib
  import shutil

  if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
    pytest.skip("no headless Chromium (apt install chromium)")
  import matplotlib.image

  script = pathlib.Path(__file__).parents[1] / "docs" / "report_screenshot.py"
  spec = importlib.util.spec_from_file_location("report_screenshot", script)
  shot = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(shot)
  space = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4, 8), kernels=(1, 3))
  evaluator = TrainingEvaluator(space, dataset="synthetic", train={"epochs": 1,
                                                                   "batch_size": 32})
  run("random", evaluator, 3, tmp_path / "run", seed=0, quiet=True)
  out = shot.render(str(tmp_path / "run"), str(tmp_path / "shot.png"), width=800, height=900)
  assert out["size"] == (800, 900)
  pixels = matplotlib.image.imread(out["png"])[..., :3]
  drawn = (pixels.min(-1) < 0.9).mean()  # share of pixels that are not (near) white
  assert 0.02 < drawn < 0.9, drawn
  page = _Tables()
  page.feed(out["dom"])
  assert len(page.tables["evaluations"]) - 1 == len(read_history(tmp_path / "run")) == 3
