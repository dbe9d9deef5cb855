"""Tests of nasjax.runtime: the CPU device count nasjax sets up when it is imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from nasjax import runtime

# Prints the device count and what nasjax configured, after importing nasjax.
REPORT = ("import json, jax, nasjax; print(json.dumps([jax.local_device_count(), "
          "nasjax.runtime.cpu_devices()]))")


def _run(code_or_script, **env):
  """Run Python in a fresh process with only the given device settings."""
  base = {k: v for k, v in os.environ.items()
          if k not in ("XLA_FLAGS", "NASJAX_CPU_DEVICES", "JAX_NUM_CPU_DEVICES")}
  base.update(JAX_PLATFORMS="cpu", NASJAX_CACHE_DIR="off", **env)
  args = [code_or_script] if code_or_script.endswith(".py") else ["-c", code_or_script]
  proc = subprocess.run([sys.executable, *args], env=base, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env,expected", [
    ({}, (runtime.DEFAULT_CPU_DEVICES, runtime.DEFAULT_CPU_DEVICES)),
    ({"NASJAX_CPU_DEVICES": "3"}, (3, 3)),
    ({"NASJAX_CPU_DEVICES": "off"}, (1, None)),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, (2, None)),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "NASJAX_CPU_DEVICES": "3"},
     (2, None)),
    ({"JAX_NUM_CPU_DEVICES": "5"}, (5, None)),
])
def test_cpu_device_count_on_import(env, expected):
  assert tuple(_run(REPORT, **env)) == expected


def test_jax_used_before_nasjax_keeps_its_devices():
  code = "import jax; jax.numpy.zeros(1).block_until_ready(); " + REPORT
  assert _run(code) == [1, None]


def test_default_cpu_devices_reads_the_environment(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("NASJAX_CPU_DEVICES", raising=False)
  assert runtime.default_cpu_devices() == runtime.DEFAULT_CPU_DEVICES == 8
  for off in ("off", "OFF", "0", "none", ""):
    monkeypatch.setenv("NASJAX_CPU_DEVICES", off)
    assert runtime.default_cpu_devices() is None
  monkeypatch.setenv("NASJAX_CPU_DEVICES", " 4 ")
  assert runtime.default_cpu_devices() == 4
  for bad in ("-2", "two", "1.5"):
    monkeypatch.setenv("NASJAX_CPU_DEVICES", bad)
    with pytest.raises(ValueError, match="NASJAX_CPU_DEVICES"):
      runtime.default_cpu_devices()
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
  assert runtime.default_cpu_devices() is None  # JAX's own setting wins


def test_default_devices_train_like_one_device():
  # fit on the devices nasjax sets up by default equals fit on one device.
  result = _run(str(Path(__file__).with_name("multidevice_check.py")))
  assert result["devices"] == runtime.DEFAULT_CPU_DEVICES
  assert result["status"] == ["ok", "ok"] and result["steps"] == [4, 4]
  assert result["max_update"] > 1e-3
  assert result["max_rel_diff"] < 1e-5, result
  np.testing.assert_allclose(result["loss_many"], result["loss_one"], rtol=1e-5)


def test_compiled_code_is_released_when_memory_maps_run_short(monkeypatch):
  counts = runtime.memory_maps()
  if counts is not None:  # Linux
    assert 0 < counts[0] < counts[1]
  f = jax.jit(lambda x: 2.0 * x + 1.0)
  assert float(f(1.0)) == 3.0
  assert f._cache_size() == 1
  monkeypatch.setattr(runtime, "memory_maps", lambda: (40, 100))
  assert not runtime.release_compiled_code(0.5)
  assert f._cache_size() == 1
  from nasjax import train

  train._STEP_CACHE["probe"] = object()  # the train steps nasjax keeps compiled itself
  monkeypatch.setattr(runtime, "memory_maps", lambda: (60, 100))
  assert runtime.release_compiled_code(0.5)
  assert f._cache_size() == 0
  assert "probe" not in train._STEP_CACHE
  assert float(f(2.0)) == 5.0  # compiled again


def test_compile_clock_counts_new_programs_only():
  import nasjax  # noqa: F401  (its import starts the clock)

  width = 37  # a shape no other test compiles

  @jax.jit
  def f(x):
    return jax.numpy.tanh(x) * 3.0 + x @ x.T

  before = runtime.compile_seconds()
  jax.block_until_ready(f(np.ones((width, width), np.float32)))
  first = runtime.compile_seconds() - before
  assert first > 1e-4  # tracing, lowering and compiling a new program take time
  before = runtime.compile_seconds()
  jax.block_until_ready(f(np.ones((width, width), np.float32)))  # cached: no compile
  assert runtime.compile_seconds() - before == pytest.approx(0.0, abs=1e-9)


OPTIONS = ("import json, nasjax; from nasjax import runtime; "
           "f = runtime.jit(lambda x: x * 2.0); y = float(f(1.5)); "
           "print(json.dumps([runtime.compiler_options(), y, f._cache_size()]))")


def _xla_knows_cpu_options() -> bool:
  """Whether this XLA accepts :data:`runtime.CPU_COMPILER_OPTIONS` (newer XLAs dropped the
  fusion-emitter switch; nasjax then warns and keeps XLA's defaults)."""
  try:
    jax.jit(lambda x: x, compiler_options=runtime.CPU_COMPILER_OPTIONS).lower(1.0).compile()
  except Exception:
    return False
  return True


@pytest.mark.parametrize("env,expected", [
    ({}, runtime.CPU_COMPILER_OPTIONS),
    ({"NASJAX_CPU_COMPILER_OPTIONS": "off"}, None),
])
def test_cpu_compiler_options_and_their_switch(env, expected):
  if expected is not None and not _xla_knows_cpu_options():
    expected = None
  options, y, cached = _run(OPTIONS, **env)
  assert options == expected
  assert y == pytest.approx(3.0, abs=0.0)
  assert cached == 1  # the wrapper exposes the jitted function's own cache


def test_compiler_options_give_the_same_train_step_results():
  # The options change how XLA generates code, not what it computes: one tiny training
  # run with and without them agrees to float rounding.
  script = ("import json, jax, numpy as np, nasjax; from nasjax import data, train; "
            "ds = data.synthetic(); net = nasjax.init(nasjax.sequential(ds.input_shape, "
            "[('conv', dict(features=4)), ('batchnorm', {}), ('relu', {}), ('gap', {}), "
            "('dense', dict(features=ds.num_classes))]), jax.random.key(0)); "
            "out, h = train.fit(net, ds, train.TrainConfig(epochs=1, batch_size=32), "
            "jax.random.key(1)); print(json.dumps([h.train_loss[-1], "
            "sum(float(np.abs(a).sum()) for a in jax.tree_util.tree_leaves(out.params))]))")
  on, off = _run(script), _run(script, NASJAX_CPU_COMPILER_OPTIONS="off")
  assert on == pytest.approx(off, rel=1e-4, abs=1e-5)


def test_top_level_is_false_inside_every_transformation():
  seen = {}

  def probe(name):
    def f(x):
      seen[name] = runtime.top_level()
      return x * 2.0
    return f

  assert runtime.top_level()
  jax.jit(probe("jit"))(1.0)
  jax.grad(probe("grad"))(1.0)
  jax.vmap(probe("vmap"))(np.ones(2, np.float32))
  jax.checkpoint(probe("checkpoint"))(1.0)
  jax.lax.scan(lambda c, x: (probe("scan")(c), x), 1.0, np.ones(2, np.float32))
  assert seen == dict.fromkeys(("jit", "grad", "vmap", "checkpoint", "scan"), False)
  assert runtime.top_level()


def test_runtime_jit_composes_with_transformations():
  f = runtime.jit(lambda x: jax.numpy.sin(x) * 2.0)
  x = np.float32(0.5)
  assert float(f(x)) == pytest.approx(2 * np.sin(0.5), rel=1e-6)
  assert f.jitted._cache_size() == 1  # the top-level call ran nasjax's compiled program
  assert float(jax.jit(lambda x: f(x) + 1.0)(x)) == pytest.approx(2 * np.sin(0.5) + 1,
                                                                   rel=1e-6)
  assert float(jax.grad(f)(x)) == pytest.approx(2 * np.cos(0.5), rel=1e-6)
  assert float(jax.grad(jax.checkpoint(f))(x)) == pytest.approx(2 * np.cos(0.5), rel=1e-6)
  xs = np.linspace(0, 1, 3, dtype=np.float32)
  np.testing.assert_allclose(jax.vmap(f)(xs), 2 * np.sin(xs), rtol=1e-6)
  _, ys = jax.lax.scan(lambda c, x: (c, f(x)), 0.0, xs)
  np.testing.assert_allclose(ys, 2 * np.sin(xs), rtol=1e-6)
