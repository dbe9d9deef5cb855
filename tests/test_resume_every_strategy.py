"""Every registered strategy: a smoke search killed (SIGKILL) at a random moment resumes,
in a fresh process, to exactly the history of an uninterrupted run, and reports."""

import concurrent.futures
import dataclasses
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import nasjax
from nasjax.search import load_strategies, read_config, read_history, tabular

REPO = Path(nasjax.__file__).resolve().parents[1]
HAS_TABLES = all((tabular.data_dir() / f).is_file()
                 for f in (tabular.NB201_FILE, tabular.MACRO_FILE))

# The smallest --max-evals whose search spans two generations: the first generation's
# evaluations and one more, so that a kill lands before the first checkpoint, between
# two, or after the end. A strategy not listed runs its preset's budget.
TWO_GENERATIONS = {"darts": 2, "eas": 2, "enas": 2, "lemonade": 3, "nao": 3, "nao_ws": 2,
                   "nsga2": 5, "pnas": 3, "random": 3, "rea": 2, "reinforce": 3,
                   "rl_nas": 3, "smash": 2, "spos": 2}
# Short training: the evaluations' results are what is compared, not their quality.
TRAIN = '{"max_steps": 2}'
# Weight-sharing strategies train their shared weights in chunks of one step here, and
# their run is killed in the middle of that training: once a chunk has been checkpointed
# (checkpoint.prev.npz exists: the initial checkpoint and one more) and before any
# candidate was recorded.
SHARED = ("darts", "enas", "nao_ws", "smash", "spos")
# Metrics measured in seconds (clocks differ between any two runs); all others, and
# every key of a history entry but the ``wall`` and ``compile`` clocks, must be equal. A
# training evaluator charges wall seconds: there ``cost`` and ``elapsed`` are clocks too
# (a table's simulated seconds are not).
TIMING_METRICS = ("compile_seconds", "train_seconds")
SECONDS = 300  # far above any process of these runs
# A process compiles (or reads compiled programs from the cache) on one core most of
# the time: two strategies' runs at once take about half the time of one after another.
WORKERS = 2


def _search_args(name: str) -> list[str]:
  args = ["search", "--strategy", name, "--preset", "smoke", "--seed", "1", "--quiet"]
  if name in TWO_GENERATIONS:
    args += ["--max-evals", str(TWO_GENERATIONS[name])]
  if "evaluator" not in load_strategies()[name].smoke:  # the preset trains networks
    args += ["--train", TRAIN]
  if name in SHARED:
    args += ["--config", '{"chunk_steps": 1}']
  return args


def _kill_moment(name: str, workdir: Path, duration: float, start: float):
  """Whether to kill the run now: a weight-sharing one as soon as a chunk of its shared
  training is checkpointed and nothing is recorded yet; the others after a delay drawn
  per strategy from [0, duration]."""
  if name in SHARED:
    history = workdir / "history.jsonl"
    return ((workdir / "checkpoint.prev.npz").exists() and
            not (history.exists() and history.stat().st_size))
  delay = np.random.default_rng(zlib.crc32(name.encode())).uniform(0.0, duration)
  return time.monotonic() >= start + delay


def _comparable(workdir: Path) -> list[dict]:
  clocks = {"wall", "compile"}
  if read_config(workdir)["evaluator"]["kind"] == "train":
    clocks |= {"cost", "elapsed"}
  return [{**{k: v for k, v in h.items() if k not in clocks},
           "metrics": {k: v for k, v in h["metrics"].items() if k not in TIMING_METRICS}}
          for h in read_history(workdir)]


@dataclasses.dataclass
class Outcome:
  """What the processes of one strategy did; ``error`` says which one failed, and how."""

  reference: list[dict] | None = None
  resumed: list[dict] | None = None
  killed: bool = False
  seconds: dict = dataclasses.field(default_factory=dict)
  error: str | None = None


class _Failed(Exception):
  pass


def _cli(args: list[str], log: Path) -> subprocess.Popen:
  with open(log, "a") as err:
    return subprocess.Popen([sys.executable, "-m", "nasjax.search.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=err)


def _finish(proc: subprocess.Popen, log: Path, what: str) -> None:
  if proc.wait(timeout=SECONDS) != 0:
    raise _Failed(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")


def _reference_kill_resume_report(name: str, tmp: Path) -> Outcome:
  """The four processes of one strategy, one after another (see the test)."""
  out = Outcome()
  search, log = _search_args(name), tmp / "stderr.txt"
  ref, killed = tmp / "ref", tmp / "killed"
  try:
    start = time.monotonic()
    _finish(_cli([*search, "--workdir", str(ref)], log), log, "the reference run")
    out.seconds["reference"] = duration = time.monotonic() - start
    out.reference = _comparable(ref)

    # Killed at a moment drawn per strategy, from when the run directory holds its
    # config (before, there is no run to resume) until as long as the reference took:
    # before, during or after any generation; a finished run resumes to itself. A
    # weight-sharing run is killed while its shared weights train (_kill_moment).
    start = time.monotonic()
    proc = _cli([*search, "--workdir", str(killed)], log)
    while not (killed / "config.json").exists():
      if proc.poll() is not None or time.monotonic() > start + SECONDS:
        proc.kill()
        raise _Failed(f"the run to kill made no run directory:\n{log.read_text()[-3000:]}")
      time.sleep(0.02)
    start = time.monotonic()
    while proc.poll() is None and not _kill_moment(name, killed, duration, start):
      time.sleep(0.005)
    if proc.poll() is None:
      proc.kill()  # SIGKILL: no handler runs, files stay as they are
      out.killed = True
    if proc.wait(timeout=SECONDS) not in (0, -9):
      raise _Failed(f"the run to kill exited with {proc.returncode}:\n"
                    f"{log.read_text()[-3000:]}")
    out.seconds["killed"] = time.monotonic() - start

    start = time.monotonic()
    _finish(_cli(["resume", str(killed), "--quiet"], log), log, "resume")
    out.seconds["resume"] = time.monotonic() - start
    out.resumed = _comparable(killed)
    start = time.monotonic()
    _finish(_cli(["report", str(killed)], log), log, "report")
    out.seconds["report"] = time.monotonic() - start
  except (_Failed, subprocess.TimeoutExpired) as e:
    out.error = str(e)
  return out


def _tested(name: str) -> bool:
  return HAS_TABLES or "evaluator" not in load_strategies()[name].smoke


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
  """Every selected strategy's :class:`Outcome` (a future), ``WORKERS`` at a time."""
  names = [item.callspec.params["name"] for item in request.session.items
           if item.path == Path(__file__) and hasattr(item, "callspec")]
  pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
  futures = {name: pool.submit(_reference_kill_resume_report, name,
                               tmp_path_factory.mktemp(name))
             for name in names if _tested(name)}
  yield futures
  pool.shutdown(cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(load_strategies()))
def test_a_killed_smoke_search_resumes_to_the_uninterrupted_history(name, outcomes):
  if not _tested(name):
    pytest.skip(f"the smoke preset of {name!r} reads reference tables not found under "
                f"{tabular.data_dir()}")
  out = outcomes[name].result(timeout=4 * SECONDS * len(outcomes))
  assert out.error is None, out.error
  assert len({h["generation"] for h in out.reference}) >= 2
  assert len(out.reference) == TWO_GENERATIONS.get(name, len(out.reference))
  assert out.resumed == out.reference
  if name in SHARED:  # killed during the shared weights' training, not after
    assert out.killed
