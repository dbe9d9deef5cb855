"""Render a run's ``report.html`` in headless Chromium: a screenshot and the page's DOM.

    python3 docs/report_screenshot.py RUN_DIR [--out docs/_static/report.png]

Runs ``nasjax report RUN_DIR`` (which writes ``RUN_DIR/report.html``), then
Debian's ``chromium`` (``apt install chromium``) in headless mode, offline: a PNG of the
page, and the DOM after the page's own script ran, which is checked for the evaluation
table. Prints the screenshot's path and size.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
  """The headless browser's executable; ``FileNotFoundError`` naming those tried."""
  for name in BROWSERS:
    path = shutil.which(name)
    if path:
      return path
  raise FileNotFoundError(f"no headless browser found (tried {', '.join(BROWSERS)}); "
                          "install one with `apt install chromium`")


def _chromium(page: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  with tempfile.TemporaryDirectory() as profile:
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--proxy-server=127.0.0.1:9",
           f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def png_size(path: pathlib.Path) -> tuple[int, int]:
  """Width and height of a PNG file, from its header."""
  head = path.read_bytes()[:24]
  if head[:8] != b"\x89PNG\r\n\x1a\n":
    raise ValueError(f"{path} is not a PNG file")
  return struct.unpack(">II", head[16:24])


def render(run_dir: str, out: str, width: int = 1200, height: int = 2200) -> dict:
  """Write the report of ``run_dir``, screenshot it to ``out`` and return what the
  browser saw: ``{"png": out, "size": (w, h), "dom": html after scripts ran}``."""
  subprocess.run([sys.executable, "-m", "nasjax", "report", run_dir], check=True,
                 capture_output=True, text=True)
  page = pathlib.Path(run_dir) / "report.html"
  if not page.is_file():
    raise FileNotFoundError(f"nasjax report wrote no {page}")
  out_path = pathlib.Path(out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  _chromium(page, f"--screenshot={out_path.resolve()}", f"--window-size={width},{height}")
  dom = _chromium(page, "--dump-dom").stdout
  return {"png": str(out_path), "size": png_size(out_path), "dom": dom}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run_dir")
  parser.add_argument("--out", default="docs/_static/report.png")
  args = parser.parse_args(argv)
  shot = render(args.run_dir, args.out)
  print(f"{shot['png']}: {shot['size'][0]} x {shot['size'][1]} px")
  return 0


if __name__ == "__main__":
  sys.exit(main())
