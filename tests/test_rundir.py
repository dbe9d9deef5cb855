"""Run directories are data: checkpoints that run no code (``.npz`` checkpoints, and the
pickles of earlier versions), completed evaluations never lost, one process at a time,
damaged or missing files met with the previous checkpoint or a one-line error naming
the file."""

import errno
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from nasjax.arch import Arch, Node
from nasjax.search import (Budget, make_evaluator, read_config, read_history, resume, run,
                           rundir, runner, tabular)
from nasjax.search import checkpoint as ckpt_format
from nasjax.search.report import report, summarize

DATA = tabular.data_dir()
pytestmark = pytest.mark.skipif(
    not (DATA / tabular.NB201_FILE).is_file() or not (DATA / tabular.MACRO_FILE).is_file(),
    reason=f"reference tables not found under {DATA}")

NB201 = {"kind": "nb201", "dataset": "cifar10"}
MACRO = {"kind": "macro"}
EVALS, SEED = 40, 1


def _without_clocks(history):
  return [{k: v for k, v in h.items() if k not in ("wall", "compile")} for h in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """``reference(strategy)``: the history of an uninterrupted rea/random run (cached)."""
  cache = {}

  def get(strategy="rea"):
    if strategy not in cache:
      work = tmp_path_factory.mktemp(f"reference-{strategy}")
      run(strategy, make_evaluator(NB201), Budget(max_evals=EVALS), work, SEED, quiet=True)
      cache[strategy] = _without_clocks(read_history(work))
    return cache[strategy]

  return get


class _Stop(Exception):
  """Stands for a process killed in the middle of a search."""


def _interrupted(work, strategy="rea", calls=12):
  """A run of ``EVALS`` evaluations stopped in its ``calls + 1``-th evaluator call."""
  evaluator = make_evaluator(NB201)
  evaluate, count = evaluator.evaluate, [0]

  def stopping(*args, **kwargs):
    count[0] += 1
    if count[0] > calls:
      raise _Stop
    return evaluate(*args, **kwargs)

  object.__setattr__(evaluator, "evaluate", stopping)
  with pytest.raises(_Stop):
    run(strategy, evaluator, Budget(max_evals=EVALS), work, SEED, quiet=True)
  evals = runner.load_checkpoint(work)["evals"]
  history = read_history(work)
  assert 0 < evals < EVALS and len(history) == evals
  return evals


def _previous_evals(work) -> int:
  """The evaluations before the last generation of the history (the previous checkpoint)."""
  history = read_history(work)
  return sum(h["generation"] < history[-1]["generation"] for h in history)


# ------------------------------------------------------------- checkpoints run no code
class _LegacyPickler(pickle.Pickler):
  """Writes a checkpoint as earlier versions did (a pickle; architectures as JSON)."""

  def reducer_override(self, obj):
    if isinstance(obj, Arch):
      return ckpt_format._arch, (obj.to_json(),)
    if isinstance(obj, Node):
      return ckpt_format._node, (obj.to_dict(),)
    return NotImplemented


def _legacy_bytes(tree) -> bytes:
  buf = io.BytesIO()
  _LegacyPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(tree)
  return buf.getvalue()


def _make_legacy(work) -> None:
  """Turn the run directory ``work`` into one that an earlier version wrote."""
  for new, old in (("checkpoint.npz", "checkpoint.pkl"),
                   ("checkpoint.prev.npz", "checkpoint.prev.pkl")):
    if (work / new).exists():
      tree = runner.load_checkpoint(work) if new == "checkpoint.npz" else (
          ckpt_format.loads((work / new).read_bytes(), new))
      (work / old).write_bytes(_legacy_bytes(tree))
  for new in ("checkpoint.npz", "checkpoint.prev.npz"):
    (work / new).unlink(missing_ok=True)


def _crafted_npz(node: dict, arrays: dict | None = None) -> bytes:
  """An ``.npz`` checkpoint whose tree is ``node`` (as :func:`ckpt_format.dumps` lays out)."""
  doc = json.dumps({"format": ckpt_format.FORMAT, "tree": node}).encode()
  buf = io.BytesIO()
  np.savez(buf, __structure__=np.frombuffer(doc, np.uint8), **(arrays or {}))
  return buf.getvalue()


class _Call:
  """Pickles as the call ``fn(*args)``: what a crafted checkpoint does on loading."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args

  def __call__(self):  # pickle takes only callables as reducers
    raise AssertionError("never called")


def _short_str(s: str) -> bytes:
  data = s.encode()
  return b"\x8c" + struct.pack("<B", len(data)) + data


def _crafted(kind: str, marker) -> tuple[bytes, str]:
  """``(pickle bytes that create marker when loaded by pickle, the global refused)``."""
  touch = f"open({str(marker)!r}, 'w').close()"
  if kind == "os.system":
    return pickle.dumps(_Call(os.system, f"touch {marker}")), f"{os.system.__module__}.system"
  if kind == "subprocess.Popen":
    return pickle.dumps(_Call(subprocess.Popen, ["touch", str(marker)])), "subprocess.Popen"
  if kind == "builtins.eval":
    return pickle.dumps(_Call(eval, touch)), "builtins.eval"
  if kind == "getattr chain":
    # Arch.from_json.__globals__["__builtins__"]["exec"](touch): getattr and an admitted
    # class are all it names.
    module_globals = _Call(getattr, _Call(getattr, Arch, "from_json"), "__globals__")
    builtins_dict = _Call(_Call(getattr, module_globals, "get"), "__builtins__")
    exec_ = _Call(_Call(getattr, builtins_dict, "get"), "exec")
    return pickle.dumps(_Call(exec_, touch)), r"getattr\(method, '__globals__'\)"
  if kind == "nasjax function":
    return (pickle.dumps(_Call(rundir.atomic_write, str(marker), b"x")),
            "nasjax.search.rundir.atomic_write")
  if kind == "dotted name":
    # Protocol 4 resolves a dotted name attribute by attribute: runner's ``os.system``.
    data = (b"\x80\x04" + _short_str("nasjax.search.runner") + _short_str("os.system") +
            b"\x93" + _short_str(f"touch {marker}") + b"\x85R.")
    return data, r"nasjax.search.runner.os.system"
  raise AssertionError(kind)


CRAFTED = ["os.system", "subprocess.Popen", "builtins.eval", "getattr chain",
           "nasjax function", "dotted name"]


@pytest.mark.parametrize("kind", CRAFTED)
def test_a_crafted_pickled_checkpoint_is_refused_and_runs_nothing(tmp_path, kind):
  work, marker = tmp_path / "run", tmp_path / "marker"
  run("random", make_evaluator(NB201), Budget(max_evals=6), work, 0, quiet=True)
  _make_legacy(work)
  history = (work / "history.jsonl").read_bytes()
  data, refused = _crafted(kind, marker)
  (work / "checkpoint.pkl").write_bytes(data)
  message = rf"refusing to load {work}/checkpoint\.pkl: it references {refused}, which"
  with pytest.raises(ValueError, match=message):
    runner.load_checkpoint(work)
  with pytest.raises(ValueError, match=message):
    resume(work, quiet=True)
  assert not marker.exists()
  assert (work / "history.jsonl").read_bytes() == history


# Classes that a crafted .npz checkpoint may name: code, a nasjax function, a nasjax class
# that is no state class, a state class given as another kind, a nested private name.
CRAFTED_NPZ = [("posix", "system", "dataclass"), ("os", "system", "dataclass"),
               ("subprocess", "Popen", "namedtuple"),
               ("nasjax.search.runner", "atomic_write", "dataclass"),
               ("nasjax.search.runner", "os.system", "enum"),
               ("nasjax.search.runner", "Progress", "dataclass"),
               ("nasjax.search.runner", "Budget", "enum")]


@pytest.mark.parametrize("module,name,kind", CRAFTED_NPZ)
def test_a_crafted_npz_checkpoint_is_refused_and_runs_nothing(tmp_path, module, name, kind):
  work = tmp_path / "run"
  run("random", make_evaluator(NB201), Budget(max_evals=6), work, 0, quiet=True)
  history = (work / "history.jsonl").read_bytes()
  node = {"t": kind, "module": module, "qualname": name, "name": "x",
          "fields": {"cmd": f"touch {tmp_path / 'marker'}"}}
  (work / "checkpoint.npz").write_bytes(_crafted_npz(node))
  message = (rf"refusing to load {work}/checkpoint\.npz: it names {module}\.{name}.*, which "
             "is not a state class of nasjax or optax")
  with pytest.raises(ValueError, match=message):
    runner.load_checkpoint(work)
  with pytest.raises(ValueError, match=message):  # refused: no fallback to the previous
    resume(work, quiet=True)
  assert not (tmp_path / "marker").exists()
  assert (work / "history.jsonl").read_bytes() == history
  assert sorted(p.name for p in work.iterdir() if p.name.startswith("checkpoint")) == [
      "checkpoint.npz", "checkpoint.prev.npz"]


@pytest.mark.parametrize("kind", ["pickle", "npz"])
def test_report_of_a_lemonade_run_refuses_a_crafted_checkpoint(tmp_path, kind):
  work, marker = tmp_path / "run", tmp_path / "marker"
  run("lemonade", make_evaluator(MACRO), Budget(max_evals=4), work, 0,
      {"n_pc": 8, "n_ac": 4}, quiet=True)
  if kind == "pickle":
    _make_legacy(work)
    (work / "checkpoint.pkl").write_bytes(_crafted("os.system", marker)[0])
  else:
    (work / "checkpoint.npz").write_bytes(_crafted_npz(
        {"t": "dataclass", "module": "os", "qualname": "system", "fields": {}}))
  suffix = {"pickle": "pkl", "npz": "npz"}[kind]
  with pytest.raises(ValueError, match=rf"refusing to load .*checkpoint\.{suffix}: it "
                     "(references|names)"):
    report(work)
  assert not marker.exists()


def test_data_from_other_processes_is_loaded_safely(monkeypatch):
  crafted = _crafted_npz({"t": "namedtuple", "module": "subprocess", "qualname": "Popen",
                          "fields": {"args": ["touch", "marker"]}})
  monkeypatch.setattr(runner, "_allgather_bytes", lambda data: [crafted])
  with pytest.raises(ValueError, match="refusing to load the data of process 0: it names "
                     r"subprocess\.Popen"):
    runner._from_lead(lambda: None, (2, 1))
  evaluator = make_evaluator(NB201)
  codes = [evaluator.space.from_index(i) for i in (0, 1)]
  monkeypatch.setattr(runner, "_allgather_bytes", lambda data: [data, crafted])
  with pytest.raises(ValueError, match="refusing to load the records of process 1"):
    runner._evaluate(evaluator, codes, jax.random.key(0), {}, (2, 0))


def test_results_and_errors_of_the_lead_process_reach_the_others(monkeypatch):
  sent = []

  def allgather(data):
    sent.append(data)
    return [data]

  monkeypatch.setattr(runner, "_allgather_bytes", allgather)
  value = ({"evals": 3, "key": jax.random.key(4)}, [{"eval": 0}])
  got = runner._from_lead(lambda: value, (2, 0))
  assert got[1] == value[1] and got[0]["evals"] == 3
  assert np.array_equal(jax.random.key_data(got[0]["key"]), jax.random.key_data(value[0]["key"]))

  def missing():
    raise FileNotFoundError(2, "no search run in W")

  with pytest.raises(FileNotFoundError, match="no search run in W") as info:
    runner._from_lead(missing, (2, 0))
  assert info.value.errno == 2
  assert all(data.startswith(b"PK") for data in sent)  # .npz archives, not pickles
  evaluator = make_evaluator(NB201)
  codes = [evaluator.space.from_index(i) for i in (0, 1, 2)]
  single = runner._evaluate(evaluator, codes, jax.random.key(0), {})
  # What process 1 sends (it evaluates candidate 1), then what process 0 gathers.
  def send(data):
    sent.append(data)
    raise _Stop

  monkeypatch.setattr(runner, "_allgather_bytes", send)
  with pytest.raises(_Stop):
    runner._evaluate(evaluator, codes, jax.random.key(0), {}, (2, 1))
  monkeypatch.setattr(runner, "_allgather_bytes", lambda data: [data, sent[-1]])
  gathered = runner._evaluate(evaluator, codes, jax.random.key(0), {}, (2, 0))
  assert [r.objectives for r in gathered] == [r.objectives for r in single]
  assert [r.metrics for r in gathered] == [r.metrics for r in single]


@pytest.mark.parametrize("strategy,evaluator,evals", [
    ("rea", NB201, 30), ("random", NB201, 30), ("reinforce", NB201, 30),
    ("nsga2", MACRO, 30)])
@pytest.mark.parametrize("written", ["npz", "pickle"])
def test_real_checkpoints_load_exactly(tmp_path, monkeypatch, strategy, evaluator, evals,
                                       written):
  saved, dumps = [], ckpt_format.dumps

  def keep(tree):  # the tree each checkpoint holds, as the search had it
    saved.append(tree)
    return dumps(tree)

  monkeypatch.setattr(ckpt_format, "dumps", keep)
  run(strategy, make_evaluator(evaluator), Budget(max_evals=evals), tmp_path, 0, quiet=True)
  trusted = saved[-1]
  if written == "pickle":
    _make_legacy(tmp_path)
  loaded = runner.load_checkpoint(tmp_path)
  assert loaded["evals"] == evals and loaded["finished"] is True
  assert jax.dtypes.issubdtype(loaded["key"].dtype, jax.dtypes.prng_key)

  def leaves(tree):
    out = []
    for x in jax.tree.leaves(tree):
      if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
      out.append((type(x), np.asarray(x)))
    return out

  assert jax.tree.structure(loaded) == jax.tree.structure(trusted)
  for (ta, a), (tb, b) in zip(leaves(loaded), leaves(trusted), strict=True):
    assert ta is tb and a.dtype == b.dtype and np.array_equal(a, b)


def test_architectures_pickled_by_earlier_versions_still_load():
  import nasjax

  arch = nasjax.sequential((8, 8, 3), [("gap", {}), ("dense", {"features": 4})])
  # Arch.__reduce__ pickles as getattr(Arch, "from_json"), as checkpoints used to.
  data = pickle.dumps({"a": arch, "n": arch.nodes[1]})
  assert b"getattr" in data
  assert ckpt_format.loads_pickle(data, "old") == {"a": arch, "n": arch.nodes[1]}
  data = _legacy_bytes({"a": arch, "n": arch.nodes[1]})  # the reducers of later pickles
  assert ckpt_format.loads_pickle(data, "old") == {"a": arch, "n": arch.nodes[1]}


def test_a_run_directory_of_pickles_resumes_and_writes_npz(tmp_path, reference):
  work = tmp_path / "run"
  evals = _interrupted(work)
  _make_legacy(work)
  assert runner.load_checkpoint(work)["evals"] == evals
  result = resume(work, quiet=True)
  assert result.evals == EVALS
  assert _without_clocks(read_history(work)) == reference()
  assert runner.load_checkpoint(work)["evals"] == EVALS
  assert (work / "checkpoint.npz").exists() and (work / "checkpoint.pkl").exists()
  # The pickle is older than the .npz checkpoints: read only when they are unreadable.
  (work / "checkpoint.npz").write_bytes(GARBAGE)
  (work / "checkpoint.prev.npz").unlink(missing_ok=True)
  with pytest.warns(UserWarning, match=r"checkpoint\.npz is damaged .*; reading "
                    r".*checkpoint\.pkl instead \(written before"):
    assert runner.load_checkpoint(work)["evals"] == evals


# ------------------------------------------------------- completed evaluations kept
def test_resume_without_any_checkpoint_is_refused(tmp_path):
  work = tmp_path / "run"
  run("rea", make_evaluator(NB201), Budget(max_evals=EVALS), work, SEED, quiet=True)
  history = (work / "history.jsonl").read_bytes()
  (work / "checkpoint.npz").unlink()
  (work / "checkpoint.prev.npz").unlink(missing_ok=True)
  with pytest.raises(ValueError, match=rf"{work}/checkpoint\.npz is missing but "
                     rf"{work}/history\.jsonl holds {EVALS} evaluations"):
    resume(work, quiet=True)
  assert (work / "history.jsonl").read_bytes() == history


def test_resume_without_the_checkpoint_continues_from_the_previous(tmp_path, reference):
  work = tmp_path / "run"
  _interrupted(work)
  (work / "checkpoint.npz").unlink()
  prev = _previous_evals(work)
  with pytest.warns(UserWarning, match=rf"checkpoint\.npz is missing; continuing from "
                    rf".*checkpoint\.prev\.npz \({prev} evaluations"):
    result = resume(work, quiet=True)
  assert result.evals == EVALS
  assert _without_clocks(read_history(work)) == reference()


def test_a_new_search_over_a_run_without_config_is_refused(tmp_path):
  work = tmp_path / "run"
  run("random", make_evaluator(NB201), Budget(max_evals=30), work, 0, quiet=True)
  history = (work / "history.jsonl").read_bytes()
  (work / "config.json").unlink()
  with pytest.raises(ValueError, match=rf"{work} holds history\.jsonl, checkpoint\.npz, "
                     r"checkpoint\.prev\.npz of a search run but no config\.json"):
    run("random", make_evaluator(NB201), Budget(max_evals=10), work, 0, quiet=True)
  assert (work / "history.jsonl").read_bytes() == history
  assert not (work / "config.json").exists()


# ------------------------------------------------------------ one process at a time
def test_a_second_process_is_refused_until_the_first_dies(tmp_path, reference):
  work = tmp_path / "run"
  _interrupted(work)
  history = (work / "history.jsonl").read_bytes()
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys; from pathlib import Path; "
       "from nasjax.search import rundir; lock = rundir._lock(Path(sys.argv[1])); "
       "print('locked', flush=True); sys.stdin.read()", str(work)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline() == b"locked\n"
    busy = rf"{work} is in use by another nasjax process \(pid {holder.pid}\)"
    with pytest.raises(ValueError, match=busy):
      resume(work, quiet=True)
    with pytest.raises(ValueError, match=busy):
      run("rea", make_evaluator(NB201), Budget(max_evals=EVALS), work, SEED, quiet=True)
    assert (work / "history.jsonl").read_bytes() == history
  finally:
    holder.kill()
    holder.wait()
  result = resume(work, quiet=True)
  assert result.evals == EVALS
  assert _without_clocks(read_history(work)) == reference()


# ------------------------------------------------------------------ damaged checkpoints
GARBAGE = b"\x00\xffnot a checkpoint\n" * 8


def _flip_member_byte(data: bytes) -> bytes:
  """``data`` with the last byte of its last member flipped (the zip's CRC then fails)."""
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    info = zf.infolist()[-1]
  name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                  info.header_offset + 30])
  at = info.header_offset + 30 + name_len + extra_len + info.compress_size - 1
  return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _other_shape(data: bytes) -> bytes:
  """``data`` with the structure's shape of its first array changed."""
  with np.load(io.BytesIO(data), allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  text = arrays["__structure__"].tobytes().decode()
  text = text.replace('"shape":[', '"shape":[1,', 1)
  arrays["__structure__"] = np.frombuffer(text.encode(), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


DAMAGE = {"truncated": lambda d: d[:len(d) // 2], "empty": lambda d: b"",
          "garbage": lambda d: GARBAGE, "flipped byte": _flip_member_byte,
          "other shape": _other_shape}


# Flipped bytes and shapes damage an .npz archive only; a pickle gets the other three.
@pytest.mark.parametrize("written, damage", [
    (w, d) for w in ("npz", "pickle") for d in DAMAGE
    if w == "npz" or d not in ("flipped byte", "other shape")])
def test_a_damaged_checkpoint_falls_back_to_the_previous(tmp_path, reference, damage,
                                                         written):
  work = tmp_path / "run"
  _interrupted(work)
  suffix = "npz"
  if written == "pickle":
    _make_legacy(work)
    suffix = "pkl"
  path = work / f"checkpoint.{suffix}"
  damaged = DAMAGE[damage](path.read_bytes())
  path.write_bytes(damaged)
  prev = _previous_evals(work)
  with pytest.warns(UserWarning, match=rf"{path} is (damaged|empty).*set aside as "
                    rf"checkpoint\.damaged\.{suffix}.*continuing from "
                    rf".*checkpoint\.prev\.{suffix} \({prev} evaluations"):
    result = resume(work, quiet=True)
  assert result.evals == EVALS
  assert _without_clocks(read_history(work)) == reference()
  assert (work / f"checkpoint.damaged.{suffix}").read_bytes() == damaged
  assert runner.load_checkpoint(work)["evals"] == EVALS
  assert (work / "checkpoint.npz").exists()


@pytest.mark.parametrize("previous", ["damaged", "missing"])
def test_no_readable_checkpoint_is_an_error_naming_the_files(tmp_path, previous):
  work = tmp_path / "run"
  evals = _interrupted(work)
  history = (work / "history.jsonl").read_bytes()
  (work / "checkpoint.npz").write_bytes(b"")
  if previous == "damaged":
    (work / "checkpoint.prev.npz").write_bytes(GARBAGE)
    message = (rf"{work}/checkpoint\.npz is empty; {work}/checkpoint\.prev\.npz is damaged "
               rf"\(.*\): no checkpoint to continue the {evals} evaluations")
  else:
    (work / "checkpoint.prev.npz").unlink(missing_ok=True)
    message = rf"{work}/checkpoint\.npz is empty: no checkpoint to continue the {evals} "
  with pytest.raises(ValueError, match=message):
    resume(work, quiet=True)
  with pytest.raises(ValueError, match=message.split(": no")[0]):
    runner.load_checkpoint(work)
  assert (work / "history.jsonl").read_bytes() == history


# --------------------------------------------------------------- full disks
@pytest.mark.parametrize("failing", ["checkpoint.npz.tmp", "history.jsonl"])
def test_a_full_disk_is_an_error_naming_the_file(tmp_path, reference, monkeypatch, failing):
  work = tmp_path / "run"
  fsync, count = os.fsync, [0]

  def full(fd):
    if failing in os.readlink(f"/proc/self/fd/{fd}"):
      count[0] += 1
      if count[0] == 6:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fsync(fd)

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match=rf"cannot write {work}/{failing.split('.tmp')[0]}: No "
                     "space left on device") as info:
    run("rea", make_evaluator(NB201), Budget(max_evals=EVALS), work, SEED, quiet=True)
  monkeypatch.undo()
  assert info.value.errno == errno.ENOSPC
  assert sorted(p.name for p in work.iterdir() if ".tmp" in p.name) == []
  # The checkpoint before the failed write is intact (the first write is the initial one).
  kept = runner.load_checkpoint(work)
  assert kept["generation"] == (4 if failing == "checkpoint.npz.tmp" else 5)
  (work / "checkpoint.npz.tmp12345").write_bytes(b"cut short by a kill")
  assert resume(work, quiet=True).evals == EVALS
  assert _without_clocks(read_history(work)) == reference()
  assert not (work / "checkpoint.npz.tmp12345").exists()


# ------------------------------------------------------------- errors naming the file
def test_a_bad_history_line_names_the_file_and_line(tmp_path):
  run("random", make_evaluator(NB201), Budget(max_evals=30), tmp_path, 0, quiet=True)
  path = tmp_path / "history.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines) + '{"eval": 30, "arch": "|none~0|+|no')  # cut by a kill
  assert len(read_history(tmp_path)) == 30
  path.write_text("".join(lines[:4] + ["{not json\n"] + lines[5:]))
  with pytest.raises(ValueError, match=rf"{path}, line 5 is not valid JSON: Expecting "
                     "property name enclosed in double quotes at column 2"):
    read_history(tmp_path)
  with pytest.raises(ValueError, match=rf"{path}, line 5 is not valid JSON"):
    report(tmp_path)
  path.write_text("".join(lines[:5] + lines[4:]))  # written twice, as by two processes
  with pytest.raises(ValueError, match=rf"{path}, line 6 holds evaluation 4, expected 5"):
    read_history(tmp_path)
  path.write_text("".join(lines[:2] + ["[1, 2]\n"] + lines[3:]))
  with pytest.raises(ValueError, match=rf"{path}, line 3 is not a history entry"):
    read_history(tmp_path)


def test_bad_config_and_best_files_name_the_file(tmp_path):
  run("random", make_evaluator(NB201), Budget(max_evals=10), tmp_path, 0, quiet=True)
  config = tmp_path / "config.json"
  good = config.read_text()
  config.write_text("")
  with pytest.raises(ValueError, match=rf"{config} is not valid JSON: Expecting value at "
                     "line 1, column 1"):
    resume(tmp_path, quiet=True)
  cfg = json.loads(good)
  del cfg["seed"], cfg["budget"]
  config.write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=rf"{config} lacks the key\(s\) \['budget', 'seed'\]"):
    resume(tmp_path, quiet=True)
  with pytest.raises(ValueError, match=rf"{config} lacks the key\(s\)"):
    read_config(tmp_path)
  config.write_text(good)
  best = tmp_path / "best.json"
  best.write_text('{"evals": 10,')
  with pytest.raises(ValueError, match=rf"{best} is not valid JSON: Expecting property name "
                     "enclosed in double quotes at line 1, column 14"):
    summarize(tmp_path)


def test_report_of_a_cut_history_is_not_finished(tmp_path):
  run("random", make_evaluator(NB201), Budget(max_evals=30), tmp_path, 0, quiet=True)
  full = summarize(tmp_path)
  assert full["finished"] is True and full["evaluations"] == 30
  assert "recorded_evaluations" not in full
  path = tmp_path / "history.jsonl"
  path.write_text("".join(path.read_text().splitlines(keepends=True)[:15]))
  cut = summarize(tmp_path)
  assert cut["finished"] is False
  assert cut["evaluations"] == 15 and cut["recorded_evaluations"] == 30


# ------------------------------------------------------------------------ the seed
@pytest.mark.parametrize("seed", [10**23, 2**63, -2**63 - 1, 1.5, True, "3"])
def test_a_bad_seed_is_refused_before_anything_is_written(tmp_path, seed):
  work = tmp_path / "run"
  with pytest.raises(ValueError, match=rf"the seed must be an integer from -2\*\*63 to "
                     rf"2\*\*63 - 1, got {seed!r}"):
    run("random", make_evaluator(NB201), Budget(max_evals=3), work, seed, quiet=True)
  assert not work.exists()


def test_the_extreme_seeds_run(tmp_path):
  for seed in (2**63 - 1, -2**63):
    result = run("random", make_evaluator(NB201), Budget(max_evals=3), tmp_path / str(seed),
                 seed, quiet=True)
    assert result.evals == 3 and read_config(tmp_path / str(seed))["seed"] == seed
