"""Process-wide JAX settings nasjax turns on when it is imported.

- The persistent compilation cache. Search compiles a program for every new
  architecture; a persistent cache lets a second process (a resumed search, the next
  experiment) skip most of that. The cache is on by default in ``$NASJAX_CACHE_DIR``,
  else ``$XDG_CACHE_HOME/nasjax/xla``, else ``~/.cache/nasjax/xla``. Set
  ``NASJAX_CACHE_DIR=off`` to leave JAX's settings alone.
- Several devices on the CPU backend (:data:`DEFAULT_CPU_DEVICES`, or
  ``$NASJAX_CPU_DEVICES``), over which :func:`nasjax.train.fit` splits each batch.
  XLA's CPU backend computes the weight gradient of a convolution and the gradient of
  a max pool (``select_and_scatter``) two to three times faster per image on slices of
  8-16 images than on a whole batch of 128 (their loops over the batch do not stay in
  the caches), and the devices work on their slices concurrently. A train step of a
  plain CNN at batch 128 takes about 40% less CPU time on 8 CPU devices than on one
  (``benchmarks/README.md``), and data-parallel training equals one-device training to
  1e-5. GPU and TPU devices are not affected.
- A compile clock (:func:`compile_seconds`): the seconds this process has spent turning
  programs into executables (tracing, lowering and XLA compilation, or reading them from
  the persistent cache), summed from JAX's own monitoring events. The search runner
  records it with every evaluation, so ``nasjax report`` shows the share of a run's wall
  time that went into compiling: all of it, the strategy's morphisms and distillation
  included, not only the candidates' train steps.
- Compiler options for nasjax's own programs on the CPU backend
  (:data:`CPU_COMPILER_OPTIONS`, through :func:`jit` and :func:`compiler_options`):
  XLA's CPU fusion emitters are turned off, which compiles a plain CNN's train step
  20-37% faster with the same step time (``benchmarks/README.md``). A search compiles
  programs for every new architecture, so this is a share of its wall time (measured
  with jax 0.10; newer XLAs dropped the switch, and nasjax then warns once and keeps
  XLA's defaults). Set ``NASJAX_CPU_COMPILER_OPTIONS=off`` for XLA's defaults. JAX
  accepts compiler options only on a program compiled at top level, so a :func:`jit`
  function called inside a transformation (the user's ``jax.jit``, ``grad``, ``vmap``,
  ``scan``, ``checkpoint``) is traced as a plain ``jax.jit`` and becomes part of the
  caller's program (:func:`top_level`).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings

import jax

_enabled: str | None = None
_cpu_devices: int | None = None

# CPU devices nasjax asks for: batches of 32-256 images leave 4-32 per device, where
# XLA's CPU gradients cost least per image (see the module docstring).
DEFAULT_CPU_DEVICES = 8
_OFF = ("", "off", "0", "none")


def default_cache_dir() -> str | None:
  """Where the compilation cache lives, or None when turned off."""
  env = os.environ.get("NASJAX_CACHE_DIR")
  if env is not None:
    return None if env.strip().lower() in _OFF else env
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "nasjax", "xla")


def enable_compilation_cache(path: str | None = None,
                             min_compile_seconds: float = 0.2) -> str | None:
  """Turn on JAX's persistent compilation cache at ``path`` (default: see module doc).

  Programs that took at least ``min_compile_seconds`` to compile are stored. Returns the
  directory in use, or None when the cache is off. A user who configured
  ``jax_compilation_cache_dir`` already keeps their setting.
  """
  global _enabled
  if jax.config.jax_compilation_cache_dir:
    _enabled = jax.config.jax_compilation_cache_dir
    return _enabled
  path = path or default_cache_dir()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # an unwritable home must not break import
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  _enabled = path
  return path


def cache_dir() -> str | None:
  """The compilation cache directory in use, or None."""
  return _enabled


def default_cpu_devices() -> int | None:
  """How many CPU devices nasjax asks JAX for, or None to leave JAX's setting alone.

  None when ``XLA_FLAGS`` sets ``--xla_force_host_platform_device_count`` (a count
  chosen through JAX's own settings always wins; :func:`configure_cpu_devices` also
  keeps a configured ``jax_num_cpu_devices``). Otherwise ``$NASJAX_CPU_DEVICES`` when
  set: a positive count, or ``off`` (also ``0``, ``none`` or empty) for JAX's default
  of one device. Otherwise :data:`DEFAULT_CPU_DEVICES`.

  Raises:
    ValueError: ``$NASJAX_CPU_DEVICES`` is neither a positive integer nor ``off``.
  """
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  env = os.environ.get("NASJAX_CPU_DEVICES")
  if env is not None:
    if env.strip().lower() in _OFF:
      return None
    try:
      n = int(env)
    except ValueError:
      n = 0
    if n < 1:
      raise ValueError(f"NASJAX_CPU_DEVICES must be a positive integer or 'off', got {env!r}")
    return n
  return DEFAULT_CPU_DEVICES


def configure_cpu_devices(n: int | None = None) -> int | None:
  """Ask JAX for ``n`` CPU devices (default: :func:`default_cpu_devices`).

  This works only before JAX creates its backends (its first array or device query);
  after that, or when ``jax_num_cpu_devices`` was configured already (for instance
  through ``$JAX_NUM_CPU_DEVICES``), JAX's setting is kept. Returns the count set, or
  None when nothing was changed.
  """
  global _cpu_devices
  n = default_cpu_devices() if n is None else n
  if n is None or jax.config.jax_num_cpu_devices >= 0:
    return None
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # JAX was used before nasjax was imported
    return None
  _cpu_devices = n
  return n


def cpu_devices() -> int | None:
  """The CPU device count nasjax configured, or None where it left JAX's setting."""
  return _cpu_devices


# JAX's monitoring events whose durations make up compile time (jax._src.dispatch).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_compile_lock = threading.Lock()
_compile_total = 0.0
_compile_listening = False


def _on_event_duration(event: str, duration: float, **_) -> None:
  global _compile_total
  if event in COMPILE_EVENTS:
    with _compile_lock:
      _compile_total += float(duration)


def start_compile_clock() -> None:
  """Start summing this process's compile time (idempotent; nasjax's import calls it)."""
  global _compile_listening
  with _compile_lock:
    if _compile_listening:
      return
    _compile_listening = True
  jax.monitoring.register_event_duration_secs_listener(_on_event_duration)


def compile_seconds() -> float:
  """Seconds this process has spent compiling since :func:`start_compile_clock`.

  The sum of JAX's tracing, MLIR lowering and backend compilation events (a persistent
  cache hit counts its retrieval time). Programs compiled on several threads at once
  each count in full, so the sum can outrun the wall clock.
  """
  with _compile_lock:
    return _compile_total


def memory_maps() -> tuple[int, int] | None:
  """``(memory mappings of this process, the kernel's limit vm.max_map_count)``, or None
  where the system does not say (not Linux)."""
  try:
    with open("/proc/self/maps", "rb") as f:
      used = sum(1 for _ in f)
    with open("/proc/sys/vm/max_map_count") as f:
      limit = int(f.read())
  except (OSError, ValueError):
    return None
  return used, limit


def release_compiled_code(fraction: float = 0.5) -> bool:
  """Drop JAX's in-memory compiled programs when they crowd the process's address space.

  Each compiled XLA CPU program holds memory mappings for its code (about 280 for a
  small CNN's train and eval steps), and a search compiles new programs for every new
  architecture; past ``vm.max_map_count`` (65,530 by default) LLVM fails with "Cannot
  allocate memory" and the process dies, after about 200 new architectures. When the
  mappings exceed ``fraction`` of the limit this calls :func:`jax.clear_caches`
  (programs needed again are recompiled, or read from the persistent compilation cache)
  and returns True. The search runner calls it after every generation.
  """
  counts = memory_maps()
  if counts is None or counts[0] <= fraction * counts[1]:
    return False
  import gc

  jax.clear_caches()
  for hook in _release_hooks:
    hook()
  gc.collect()
  return True


_release_hooks: list = []


def on_release(hook) -> None:
  """Call ``hook()`` whenever :func:`release_compiled_code` drops compiled programs (for
  caches of compiled programs outside JAX's own, e.g. :mod:`nasjax.train`'s)."""
  _release_hooks.append(hook)


# ----------------------------------------------------------------- compiler options
# XLA's CPU "fusion emitters" (MLIR-based code generation for fused loops) spend more
# time compiling a CNN's train step than the older emitters and give no faster code for
# these programs: off, a small CNN's step compiles 20-37% faster at equal step time.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_options_lock = threading.Lock()
_options: dict | None = None
_options_known = False


def compiler_options() -> dict | None:
  """The XLA options nasjax compiles its own programs with (None: XLA's defaults).

  :data:`CPU_COMPILER_OPTIONS` on the CPU backend, unless ``$NASJAX_CPU_COMPILER_OPTIONS``
  is ``off``; None on other backends. The first call checks, with a one-line program,
  that this XLA knows the options; an XLA that does not gets a warning and its defaults.
  """
  global _options, _options_known
  with _options_lock:
    if _options_known:
      return _options
    opts = None
    env = os.environ.get("NASJAX_CPU_COMPILER_OPTIONS")
    if (env is None or env.strip().lower() not in _OFF) and jax.default_backend() == "cpu":
      opts = dict(CPU_COMPILER_OPTIONS)
      try:
        jax.jit(lambda x: x + 1, compiler_options=opts).lower(1.0).compile()
      except Exception as e:  # an XLA without these options: keep its defaults
        warnings.warn(f"nasjax: XLA rejected compiler options {opts} ({e}); compiling "
                      "with XLA's defaults", RuntimeWarning, stacklevel=2)
        opts = None
    _options, _options_known = opts, True
    return _options


try:  # JAX's (private) trace context: the one place that knows which trace is active
  from jax._src.core import trace_ctx as _trace_ctx
except ImportError:
  _trace_ctx = None


def top_level() -> bool:
  """Whether the caller runs outside every JAX transformation (``jit``, ``grad``,
  ``vmap``, ``scan``, ``checkpoint``, ``shard_map``...), where a program compiled with
  :func:`compiler_options` may run.

  Inside a transformation JAX stages nested programs into the caller's, and refuses
  compiler options there. JAX has no public query for this; where its private one is
  missing the answer is False (XLA's default options: slower to compile, never wrong).
  """
  is_top_level = getattr(_trace_ctx, "is_top_level", None)
  return bool(is_top_level()) if is_top_level is not None else False


class _Jit:
  """``jax.jit(fun, compiler_options=compiler_options(), **kwargs)`` where called at top
  level, a plain ``jax.jit(fun, **kwargs)`` inside a transformation (see
  :func:`top_level`); both made on first use (after the backend is known)."""

  def __init__(self, fun, kwargs):
    functools.update_wrapper(self, fun)
    self._fun, self._kwargs, self._jitted, self._plain = fun, kwargs, None, None

  @property
  def jitted(self):
    """The top-level program, compiled with :func:`compiler_options`."""
    if self._jitted is None:
      self._jitted = jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)
    return self._jitted

  @property
  def plain(self):
    """The function as a plain ``jax.jit``, for use inside a transformation."""
    if self._plain is None:
      self._plain = jax.jit(self._fun, **self._kwargs)
    return self._plain

  def __call__(self, *args, **kwargs):
    return (self.jitted if top_level() else self.plain)(*args, **kwargs)

  def lower(self, *args, **kwargs):
    # Lowering compiles a program of its own, at top level wherever it is called.
    return self.jitted.lower(*args, **kwargs)

  def __getattr__(self, name):  # the jitted function's own methods (e.g. _cache_size)
    if name.startswith("__") or name in ("_fun", "_kwargs", "_jitted", "_plain"):
      raise AttributeError(name)
    return getattr(self.jitted, name)


def jit(fun=None, **kwargs):
  """:func:`jax.jit` with nasjax's :func:`compiler_options` at top level, composable with
  every JAX transformation (usable as a decorator, with or without keyword arguments)."""
  if fun is None:
    return functools.partial(jit, **kwargs)
  return _Jit(fun, kwargs)
