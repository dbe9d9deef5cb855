"""Searches on Ray workers (nasjax.search.ray_backend), on a cluster of several Ray nodes in
this machine (ray.cluster_utils.Cluster): batch mode equals the run without Ray, an
asynchronous run tells every result once, lost worker processes and nodes lose nothing,
and a killed driver resumes."""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import nasjax
from nasjax.search import (STRATEGIES, NB201Evaluator, PlainCNNSpace, RegularizedEvolution,
                           TrainingEvaluator, cli, make_evaluator, read_config, read_history,
                           resume, run, runner, tabular)
from nasjax.search.report import report, summarize
from nasjax.search.strategies.evolution import EvolutionConfig

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from nasjax.search import ray_backend  # noqa: E402
from nasjax.search.ray_backend import (RayBackend, SimulatedTime, WorkerPool,  # noqa: E402
                                       asynchronous_strategies)

REPO = Path(nasjax.__file__).resolve().parents[1]
needs_tables = pytest.mark.skipif(not (tabular.data_dir() / tabular.NB201_FILE).is_file(),
                                  reason=f"NB201's table not found under {tabular.data_dir()}")
# Nodes are declared dead after 3 missed health checks 0.5 s apart (Ray's default: 5 of 3 s).
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
               "health_check_initial_delay_ms": 0}
STORE = 100 << 20  # object store per node, bytes
# NB201's 12-epoch trainings (about 150 simulated seconds) last about 30 ms.
SECONDS_PER_COST = 0.0002
CLOCKS = ("wall", "compile", "worker")


def _without_clocks(history):
  return [{k: v for k, v in h.items() if k not in CLOCKS} for h in history]


def _tickets(history):
  return [(h["generation"], h["position"]) for h in history]


# ------------------------------------------------------------------------- no cluster
def test_backend_options_are_checked_and_name_the_bad_value():
  with pytest.raises(ValueError, match=r"ray backend: workers must be an int >= 1.*got 0"):
    RayBackend(workers=0)
  with pytest.raises(ValueError, match=r"address must be .*HOST:PORT, got 'nohost'"):
    RayBackend(address="nohost")
  with pytest.raises(ValueError, match=r"asynchronous must be true or false, got 'yes'"):
    RayBackend(asynchronous="yes")
  with pytest.raises(ValueError, match="strategy 'nsga2' is told whole generations"):
    RayBackend(asynchronous=True).mode("nsga2")
  assert not RayBackend(asynchronous=False).mode("rea")
  options = RayBackend(address="10.0.0.1:6379", workers=8, in_flight=12, retries=1)
  assert RayBackend.from_dict(options.to_dict()) == options
  assert RayBackend.from_dict(options.to_dict(), workers=2, address=None).workers == 2
  with pytest.raises(ValueError, match=r"unknown ray backend option\(s\) \['gpus'\]"):
    RayBackend.from_dict({"gpus": 1})
  with pytest.raises(ValueError, match="backend must be 'local', 'ray'.*got 'spark'"):
    ray_backend.coerce("spark")
  with pytest.raises(ValueError, match="cannot reach the Ray cluster at 127.0.0.1:1: "):
    ray_backend._check_reachable("127.0.0.1:1")


def test_which_strategies_run_asynchronously_is_declared_on_their_registry_entry(
    monkeypatch):
  assert {"random", "rea"} <= set(asynchronous_strategies())
  assert asynchronous_strategies() == sorted(n for n, e in STRATEGIES.items() if e.asynchronous)
  for name, entry in STRATEGIES.items():
    assert RayBackend().mode(name) is entry.asynchronous, name
  assert not STRATEGIES["reinforce"].asynchronous
  monkeypatch.setitem(STRATEGIES, "reinforce",
                      dataclasses.replace(STRATEGIES["reinforce"], asynchronous=True))
  assert RayBackend().mode("reinforce") and "reinforce" in asynchronous_strategies()


def _fresh(code: str) -> str:
  """What ``code`` prints, run in a new Python process."""
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_ray_backend_is_an_attribute_of_nasjax_search_imported_on_first_use():
  got = json.loads(_fresh(
      "import json, sys, nasjax, nasjax.search as s\n"
      "before = ['ray' in sys.modules, 'nasjax.search.ray_backend' in sys.modules]\n"
      "from nasjax.search import ray_backend\n"
      "same = [s.RayBackend is ray_backend.RayBackend, s.WorkerPool is ray_backend.WorkerPool]\n"
      "print(json.dumps([before, same, 'ray' in sys.modules]))"))
  assert got == [[False, False], [True, True], False]
  assert nasjax.search.RayBackend is RayBackend
  with pytest.raises(AttributeError, match="has no attribute 'RayBackends'"):
    nasjax.search.RayBackends  # noqa: B018


@needs_tables
def test_simulated_time_lasts_its_seconds_and_is_rebuilt_from_its_config():
  evaluator = SimulatedTime(NB201Evaluator(), 0.0001, seconds=0.05)
  codes = np.stack([np.asarray(evaluator.space.encode(a)) for a in (
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
      "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|")])
  t = time.perf_counter()
  records = evaluator.evaluate(codes, None, keys=[None, None])
  seconds = time.perf_counter() - t
  assert records == NB201Evaluator().evaluate(codes)
  expected = 0.0001 * sum(r.cost for r in records) + 2 * 0.05
  assert expected <= seconds < expected + 1.0
  assert make_evaluator(evaluator.config()).config() == evaluator.config()
  with pytest.raises(ValueError, match="SimulatedTime: seconds must be a number >= 0.*-1"):
    SimulatedTime(NB201Evaluator(), 0.0, seconds=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class _Stopping(SimulatedTime):
  """SimulatedTime that stops the search (raises) at its third batch, as a killed driver
  would stop; its config is SimulatedTime's."""

  calls: list = dataclasses.field(default_factory=list)

  def evaluate(self, candidates, key=None, *, keys=None):
    self.calls.append(len(candidates))
    if len(self.calls) == 3:
      raise RuntimeError("the driver stops")
    return super().evaluate(candidates, key, keys=keys)


@needs_tables
def test_a_simulated_time_run_resumes_in_a_fresh_process(tmp_path):
  workdir = tmp_path / "stopped"
  with pytest.raises(RuntimeError, match="the driver stops"):
    run("random", _Stopping(NB201Evaluator(), 0.0, seconds=0.001), 12, workdir, 7,
        {"batch_size": 4}, quiet=True)
  assert runner.load_checkpoint(workdir)["evals"] == 8
  got = json.loads(_fresh(
      "import json, sys\nfrom nasjax.search import resume\n"
      f"r = resume({str(workdir)!r}, quiet=True)\n"
      "print(json.dumps([r.evals, 'ray' in sys.modules]))"))
  assert got == [12, False]
  ref = run("random", SimulatedTime(NB201Evaluator(), 0.0, seconds=0.001), 12,
            tmp_path / "ref", 7, {"batch_size": 4}, quiet=True)
  assert _without_clocks(read_history(workdir)) == _without_clocks(ref.history)


def test_ray_flags_need_the_ray_backend(tmp_path, capsys):
  base = ["search", "--strategy", "rea", "--benchmark", "nb201", "--max-evals", "2",
          "--workdir", str(tmp_path / "w")]
  assert cli.main([*base, "--workers", "2"]) == 2
  assert "--workers applies to --backend ray" in capsys.readouterr().err
  assert cli.main([*base, "--backend", "ray", "--coordinator", "h:1", "--num-processes",
                   "2", "--process-id", "0"]) == 2
  assert "--backend ray and --coordinator" in capsys.readouterr().err
  assert cli.main([*base, "--backend", "ray", "--in-flight", "0"]) == 2
  assert "in_flight must be an int >= 1" in capsys.readouterr().err
  assert not (tmp_path / "w").exists()


@needs_tables
def test_report_shows_worker_utilisation_and_evaluations_per_hour(tmp_path):
  run("random", NB201Evaluator(), 4, tmp_path, 0, quiet=True)
  history = read_history(tmp_path)
  # Worker 0 busy over [0, 2] s, worker 1 over [0, 1.5] and [1.5, 2] s, then a resumed
  # session whose one worker is busy 1 s of 4.
  times = [(0, 0, 0.0, 1.0), (1, 0, 0.0, 1.5), (0, 0, 1.0, 2.0), (1, 0, 1.5, 2.0)]
  for h, (wid, session, start, end) in zip(history, times):
    h["worker"] = {"id": wid, "node": "10.0.0.1", "start": 1e9 + start, "end": 1e9 + end,
                   "attempts": 1, "session": session}
  history[-1]["worker"] = {"id": 0, "node": "10.0.0.2", "start": 2e9, "end": 2e9 + 1.0,
                           "attempts": 1, "session": 1}
  history.append({**history[-1], "eval": 4, "worker": {
      "id": 0, "node": "10.0.0.2", "start": 2e9 + 3.0, "end": 2e9 + 4.0, "attempts": 1,
      "session": 1}})
  (tmp_path / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
  s = summarize(tmp_path)
  assert s["workers"]["count"] == 3
  # 5 evaluations in 2 + 4 s of wall time.
  assert s["workers"]["evaluations_per_hour"] == pytest.approx(5 * 3600 / 6.0, rel=1e-12)
  assert s["worker_utilisation"] == pytest.approx({"0.0": 1.0, "0.1": 1.5 / 2.0, "1.0": 0.5},
                                                  rel=1e-9)
  out = report(tmp_path)
  page = (tmp_path / "report.html").read_text()
  table = page[page.index("<table id=workers>"):]
  table = table[:table.index("</table>")]
  rows = re.findall(r"<tr><td>([0-9.]+)</td><td class=l>([0-9.]+)</td><td>(\d+)</td>"
                    r"<td>([0-9.]+)</td><td>([0-9.]+)</td></tr>", table)
  assert rows == [("0.0", "10.0.0.1", "2", "2", "100"), ("0.1", "10.0.0.1", "1", "1.5", "75"),
                  ("1.0", "10.0.0.2", "2", "2", "50")]
  assert "3000 evaluations per hour" in page
  assert out["workers"]["mean_utilisation"] == pytest.approx((1.0 + 0.75 + 0.5) / 3, rel=1e-9)
  assert "worker_utilisation.0.1" in (tmp_path / "report.txt").read_text()


# ------------------------------------------------------------------------- the cluster
@contextlib.contextmanager
def _forking():
  """Ray starts its processes with fork + exec, which JAX's warning does not concern."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
    yield


@pytest.fixture(scope="module")
def cluster():
  """A head node that runs no workers and one worker node with 4 CPUs, on 127.0.0.1-like
  addresses of this machine; Ray's files in a temporary directory."""
  temp = tempfile.mkdtemp(prefix="nasjax-rt-", dir="/tmp")  # short: Ray's socket paths
  saved = os.environ.get("RAY_TMPDIR")
  os.environ["RAY_TMPDIR"] = temp
  with _forking():
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False,
        "_system_config": FAST_HEALTH})
  try:
    with _forking():
      c.add_node(num_cpus=4, object_store_memory=STORE)
    ray.init(address=c.address, log_to_driver=False, logging_level="error")
    yield c
  finally:
    ray.shutdown()
    c.shutdown()
    if saved is None:
      os.environ.pop("RAY_TMPDIR", None)
    else:
      os.environ["RAY_TMPDIR"] = saved
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def pool(cluster):
  """Two workers evaluating NB201 with its training times simulated (scaled down)."""
  with WorkerPool(SimulatedTime(NB201Evaluator(), SECONDS_PER_COST), RayBackend(workers=2)) as p:
    yield p


def _use(pool, **options):
  pool.options = dataclasses.replace(pool.options, **options)
  return pool


@needs_tables
@pytest.mark.parametrize("strategy,config", [("random", {"batch_size": 4}),
                                             ("reinforce", {})])
def test_batch_mode_equals_the_run_without_ray(pool, tmp_path, strategy, config):
  ref = run(strategy, NB201Evaluator(), 40, tmp_path / "ref", 5, config, quiet=True)
  got = run(strategy, pool.evaluator, 40, tmp_path / "ray", 5, config, quiet=True,
            backend=_use(pool, asynchronous=False))
  assert _without_clocks(got.history) == _without_clocks(ref.history)
  assert got.summary == ref.summary and got.elapsed == ref.elapsed
  workers = [h["worker"] for h in read_history(tmp_path / "ray")]
  assert {w["id"] for w in workers} == {0, 1}
  assert all(w["attempts"] == 1 and w["session"] == 0 for w in workers)
  # Each lasted at least its simulated time on its worker (a sleep may run late).
  for h, w in zip(got.history, workers):
    assert h["cost"] * SECONDS_PER_COST <= w["end"] - w["start"] < h["cost"] * SECONDS_PER_COST + 2
  assert read_config(tmp_path / "ray")["backend"]["asynchronous"] is False


@dataclasses.dataclass(frozen=True)
class _LoggedREA(RegularizedEvolution):
  """Regularized evolution that logs each generation it asks for (in order)."""

  log: list = dataclasses.field(default_factory=list, compare=False)

  def ask(self, key, state):
    codes, state = super().ask(key, state)
    jax.debug.callback(lambda c: self.log.append(np.array(c)), codes)
    return codes, state


@needs_tables
def test_asynchronous_rea_tells_each_asked_candidate_once(pool, tmp_path):
  strategy = _LoggedREA(pool.evaluator.space, EvolutionConfig(population_size=10))
  result = run(strategy, pool.evaluator, 60, tmp_path, 2, quiet=True,
               backend=_use(pool, asynchronous=None, in_flight=None))
  history = read_history(tmp_path)
  assert result.evals == len(history) == 60
  assert len(set(_tickets(history))) == 60  # nothing told twice
  # Every result told is the evaluation of a candidate asked for, at most in_flight more
  # were asked for than told, and each was evaluated with its own key.
  assert 60 <= len(strategy.log) <= 60 + pool.in_flight
  for h in history:
    assert h["code"] == strategy.log[h["generation"]][h["position"]].tolist()
    assert h["worker"]["start"] <= h["worker"]["end"]
  # The population is the last 10 results in the order told (aging evolution).
  state = runner.load_checkpoint(tmp_path)["state"]
  assert sorted(map(tuple, np.asarray(state.population).tolist())) == sorted(
      tuple(h["code"]) for h in history[-10:])
  assert [h["eval"] for h in history] == list(range(60))
  assert read_config(tmp_path)["backend"]["asynchronous"] is True
  again = resume(tmp_path, quiet=True)  # finished: nothing to evaluate, no worker started
  assert again.evals == 60 and read_history(tmp_path) == history
  # A time budget: the last evaluation started with it unspent.
  timed = run("rea", pool.evaluator, {"time_budget": 3000.0}, tmp_path / "t", 2, quiet=True,
              backend=pool)
  assert timed.history[-1]["elapsed"] >= 3000.0 > timed.history[-2]["elapsed"]
  # One in flight: each result is told before the next ask, as without Ray.
  one = run("rea", pool.evaluator, 30, tmp_path / "one", 2, quiet=True,
            backend=_use(pool, in_flight=1))
  _use(pool, in_flight=None)
  ref = run("rea", NB201Evaluator(), 30, tmp_path / "ref", 2, quiet=True)
  assert [h.pop("position") for h in one.history] == [0] * 30
  assert _without_clocks(one.history) == _without_clocks(ref.history)


def _kill_when(path: Path, evals: int, kill) -> threading.Thread:
  """A thread that calls ``kill()`` once ``path``'s history holds ``evals`` lines."""
  def watch():
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
      history = path / "history.jsonl"
      if history.exists() and history.read_bytes().count(b"\n") >= evals:
        kill()
        return
      time.sleep(0.005)
  thread = threading.Thread(target=watch, daemon=True)
  thread.start()
  return thread


@needs_tables
def test_a_worker_lost_on_its_only_attempt_is_a_failed_evaluation(pool, tmp_path):
  # Two evaluations per worker: the one it runs when it is killed fails (no retry left);
  # the one queued on it never ran, and runs elsewhere as its first attempt.
  victim = next(s for s in pool._slots.values() if s.ready).pid
  lost = pool.lost
  watcher = _kill_when(tmp_path, 10, lambda: os.kill(victim, signal.SIGKILL))
  with pytest.warns(UserWarning, match="was lost"):
    result = run("rea", pool.evaluator, 40, tmp_path, 3, quiet=True,
                 backend=_use(pool, retries=0, in_flight=4))
  watcher.join()
  _use(pool, retries=2, in_flight=None)
  failed = [h for h in result.history if h["status"] != "ok"]
  assert result.evals == 40 and len(set(_tickets(result.history))) == 40
  assert len(failed) == 1 and failed[0]["status"].startswith("error: worker lost on each of 1")
  assert failed[0]["objectives"]["val_error"] is None and failed[0]["worker"]["lost"]
  assert all(h["worker"]["attempts"] == 1 for h in result.history)
  assert pool.lost == lost + 1 and victim not in {s.pid for s in pool._slots.values()}


def _comparable(history):
  """A training run's history without its clocks (seconds, devices, workers)."""
  clocks, timing = CLOCKS + ("cost", "elapsed"), ("compile_seconds", "train_seconds", "device")
  return [{**{k: v for k, v in h.items() if k not in clocks},
           "metrics": {k: v for k, v in h["metrics"].items() if k not in timing}}
          for h in history]


@pytest.mark.slow
def test_a_training_search_on_the_cluster_equals_the_run_without_ray(cluster, tmp_path):
  space = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))
  evaluator = TrainingEvaluator(space, dataset="fashion_mnist_small", data_limit=256,
                                train={"max_steps": 3, "batch_size": 32})
  ref = run("random", evaluator, 4, tmp_path / "ref", 0, {"batch_size": 2}, quiet=True)
  with WorkerPool(evaluator, RayBackend(workers=2, asynchronous=False)) as p:
    got = run("random", evaluator, 4, tmp_path / "ray", 0, {"batch_size": 2}, quiet=True,
              backend=p)
    assert all(h["status"] == "ok" for h in got.history)
    assert _comparable(got.history) == _comparable(ref.history)
    # A worker keeps what it compiled: an architecture it trained before (the workers
    # take turns) does not compile again.
    seen = {tuple(h["code"]) for h in got.history}
    code = next(c for c in map(space.encode, ("8k3,4k1", "4k1,8k3", "8k1,8k1", "4k3,4k3"))
                if tuple(c) not in seen)
    again = [p.evaluate([np.asarray(code, np.int32)], [jax.random.key(i)])[0]
             for i in range(3)]
    first = again[0][1]["id"]
    assert [w["id"] for _, w in again] == [first, 1 - first, first]
    assert again[2][1]["compile"] == 0.0 < again[0][1]["compile"]
    # A network with its own weights goes to a worker and comes back trained, as arrays,
    # exactly as it trains here.
    data = evaluator.data
    net = nasjax.init(space.build(np.asarray(space.encode("8k3"), np.int32),
                                  data.input_shape, data.num_classes), jax.random.key(7))
    (remote, _), = p.evaluate([net], [jax.random.key(8)])
  here = evaluator.evaluate([net], jax.random.key(8), keys=[jax.random.key(8)])[0]
  assert remote.status == here.status == "ok" and remote.objectives == here.objectives
  for a, b in zip(jax.tree_util.tree_leaves(remote.network),
                  jax.tree_util.tree_leaves(here.network), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The best network, saved from a worker's arrays, computes what the local one does.
  a, b = (nasjax.load(d / "best_net.npz") for d in (tmp_path / "ref", tmp_path / "ray"))
  x = data.x_val[:8]
  np.testing.assert_array_equal(np.asarray(nasjax.apply(a, x)), np.asarray(nasjax.apply(b, x)))


@pytest.mark.slow
def test_an_asynchronous_search_reuses_the_results_of_architectures_told_before(cluster,
                                                                                tmp_path):
  # Two architectures: while one of each is under way, the other of the two workers can
  # take at most one more of each, so at most 4 of the 8 are trained.
  space = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4,), kernels=(1, 3))
  evaluator = TrainingEvaluator(space, dataset="fashion_mnist_small", data_limit=256,
                                train={"max_steps": 2, "batch_size": 32})
  with WorkerPool(evaluator, RayBackend(workers=2)) as p:
    result = run("random", evaluator, 8, tmp_path, 0, quiet=True, backend=p)
  history = read_history(tmp_path)
  assert result.evals == len(history) == 8 and len(set(_tickets(history))) == 8
  trained = [h for h in history if "worker" in h]
  cached = [h for h in history if h["metrics"].get("cached")]
  assert len(trained) + len(cached) == 8 and len(trained) <= 4
  for h in cached:  # told as the first result of its architecture was
    first = next(t for t in trained if t["code"] == h["code"])
    assert first["eval"] < h["eval"] and h["objectives"] == first["objectives"]
    assert h["cost"] == 0.0


def _driver(args: list[str], log: Path) -> subprocess.Popen:
  """``python3 ARGS`` (``-m nasjax.search.cli ...`` or ``-c CODE``) in a new process."""
  with open(log, "a") as err:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=err)


def _kill_driver(workdir: Path, args: list[str], log: Path) -> dict:
  """Run the driver until its checkpoint covers 20 evaluations, SIGKILL it; the checkpoint."""
  proc = _driver(args, log)
  deadline = time.monotonic() + 180
  try:
    while time.monotonic() < deadline and proc.poll() is None:
      path = workdir / "checkpoint.npz"
      ckpt = runner.load_checkpoint(workdir) if path.exists() else None
      if ckpt is not None and ckpt["evals"] >= 20:
        proc.kill()
        break
      time.sleep(0.005)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
  ckpt = runner.load_checkpoint(workdir)
  assert 20 <= ckpt["evals"] < 200 and not ckpt["finished"]
  return ckpt


def _resume_driver(workdir: Path, log: Path) -> None:
  """``nasjax resume WORKDIR`` in a new process."""
  proc = _driver(["-m", "nasjax.search.cli", "resume", str(workdir), "--quiet"], log)
  assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


@needs_tables
@pytest.mark.slow
def test_a_killed_driver_in_batch_mode_resumes_to_the_uninterrupted_history(cluster, tmp_path):
  workdir, log = tmp_path / "killed", tmp_path / "stderr.txt"
  args = ["-m", "nasjax.search.cli", "search", "--strategy", "reinforce", "--benchmark",
          "nb201", "--max-evals", "200", "--seed", "3", "--quiet", "--backend", "ray",
          "--address", cluster.address, "--workers", "2", "--workdir", str(workdir)]
  ckpt = _kill_driver(workdir, args, log)
  _resume_driver(workdir, log)
  reference = run("reinforce", NB201Evaluator(), 200, tmp_path / "ref", 3, quiet=True)
  history = read_history(workdir)
  assert _without_clocks(history) == _without_clocks(reference.history)
  sessions = [h["worker"]["session"] for h in history]
  assert sessions[:ckpt["evals"]] == [0] * ckpt["evals"] and sessions[-1] == 1
  assert read_config(workdir)["backend"]["address"] == cluster.address


@needs_tables
@pytest.mark.slow
def test_a_killed_asynchronous_driver_resumes_its_evaluations_in_flight(cluster, tmp_path):
  # The driver runs NB201 with simulated training times, from Python; `nasjax resume`
  # continues it in a new process that has not imported the ray backend.
  workdir, log = tmp_path / "killed", tmp_path / "stderr.txt"
  code = ("from nasjax.search import NB201Evaluator, RayBackend, run\n"
          "from nasjax.search.ray_backend import SimulatedTime\n"
          f"run('rea', SimulatedTime(NB201Evaluator(), {SECONDS_PER_COST}), 200, "
          f"{str(workdir)!r}, 4, quiet=True, "
          f"backend=RayBackend(address={cluster.address!r}, workers=2))")
  ckpt = _kill_driver(workdir, ["-c", code], log)
  assert read_config(workdir)["evaluator"]["kind"] == "simulated"
  told = read_history(workdir, ckpt["evals"])
  inflight = {(t["generation"], t["position"]): np.asarray(t["cand"]).tolist()
              for t in ckpt["inflight"]}
  assert 1 <= len(inflight) <= 2
  with pytest.raises(ValueError, match="evaluated asynchronously; continue it that way"):
    resume(workdir, quiet=True, backend="local")
  _resume_driver(workdir, log)
  history = read_history(workdir)
  assert len(history) == 200 and len(set(_tickets(history))) == 200
  assert history[:ckpt["evals"]] == told  # what was told before the kill stays
  after = {t: h for t, h in zip(_tickets(history), history) if h["eval"] >= ckpt["evals"]}
  for ticket, code in inflight.items():  # evaluated again, by the resumed driver
    assert after[ticket]["code"] == code and after[ticket]["worker"]["session"] == 1
  # The generations continue where the checkpoint's left off.
  asked = {g for g, _ in _tickets(history)}
  assert asked == set(range(max(asked) + 1))


@needs_tables
@pytest.mark.slow
def test_a_node_killed_mid_run_loses_nothing(cluster, tmp_path):
  with _forking():
    cluster.add_node(num_cpus=4, object_store_memory=STORE)
  evaluator = SimulatedTime(NB201Evaluator(), 0.001)  # about 150 ms an evaluation
  with WorkerPool(evaluator, RayBackend(workers=2)) as p:
    # The node of worker 0 (the head node runs no workers): this one or the first.
    doomed = next(n for n in cluster.worker_nodes if n.node_id == p._slots[0].node_id)
    watcher = _kill_when(tmp_path, 10, lambda: cluster.remove_node(doomed,
                                                                   allow_graceful=False))
    with pytest.warns(UserWarning, match="was lost"):
      result = run("rea", evaluator, 40, tmp_path, 6, quiet=True, backend=p)
    watcher.join()
    assert p.lost >= 1
  history = read_history(tmp_path)
  assert result.evals == len(history) == 40 and len(set(_tickets(history))) == 40
  assert all(h["status"] == "ok" for h in history)
  assert max(h["worker"]["attempts"] for h in history) == 2  # run again elsewhere
