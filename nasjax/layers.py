"""The operations an architecture node may hold.

Each op is described once, here, by an :class:`OpSpec`: its attributes and their
defaults, how many inputs it takes, how it infers its output shape, which parameters
and state it owns, how many FLOPs it costs and how it is computed. The IR
(:mod:`nasjax.arch`), initialisation and application (:mod:`nasjax.network`) and the
cost model all read this table, so a new op is one new entry.

Shapes exclude the batch dimension: ``(H, W, C)`` for feature maps, ``(C,)`` for
vectors. Feature maps are NHWC.

Attribute values are checked strictly: integers must be ``int`` (or a NumPy integer),
never ``bool`` or ``float``; every integer attribute, every tensor and every parameter
array is bounded by :data:`MAX_ELEMENTS`. Shape inference, parameter counts and FLOPs
are integer arithmetic on shapes, so they never allocate anything of a tensor's size.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Shape = tuple[int, ...]
_REQUIRED = object()

# Largest integer attribute, tensor (batch excluded) or parameter array, in elements:
# 2**40 float32s are 4 TiB, beyond any one accelerator, so a larger size is a typo or
# hostile input, refused before anything is allocated.
MAX_ELEMENTS = 2**40
_MAX_TEXT = "2**40"


class ShapeError(ValueError):
  """An op cannot be applied to the shapes of its inputs."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """Everything nasjax knows about one op.

  Attributes:
    name: the op's name in the IR.
    attrs: attribute name -> default (``REQUIRED`` for no default).
    checks: attribute name -> ``value -> canonical value``; raises ``ValueError`` for
      a value of the wrong type or out of range. One per attribute.
    arity: ``(min, max)`` number of inputs; ``max`` None for unbounded.
    shape: ``(attrs, in_shapes) -> out_shape``; raises :class:`ShapeError`.
    params: ``(attrs, in_shapes) -> {param: shape}``.
    state: ``(attrs, in_shapes) -> {state: shape}`` (non-trainable arrays).
    flops: ``(attrs, in_shapes, out_shape) -> int`` for batch 1 (multiply-add = 2).
    apply: ``(attrs, inputs, params, state, ctx) -> (out, new_state_or_None)``.
  """

  name: str
  attrs: Mapping[str, Any]
  checks: Mapping[str, Callable[[Any], Any]]
  arity: tuple[int, int | None]
  shape: Callable[..., Shape]
  params: Callable[..., dict[str, Shape]]
  state: Callable[..., dict[str, Shape]]
  flops: Callable[..., int]
  apply: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class ApplyContext:
  """Per-call settings that are not part of the architecture."""

  train: bool = False
  axis_name: str | None = None  # BN statistics are averaged over this mapped axis.
  dtype: Any = jnp.float32  # compute dtype of convolutions and dense layers.


REQUIRED = _REQUIRED
OPS: dict[str, OpSpec] = {}


def _register(spec: OpSpec) -> OpSpec:
  if set(spec.checks) != set(spec.attrs):
    raise ValueError(f"op {spec.name!r}: checks {sorted(spec.checks)} do not match "
                     f"attributes {sorted(spec.attrs)}")
  OPS[spec.name] = spec
  return spec


_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 60


def short_repr(value) -> str:
  """``repr`` cut to a few dozen characters and levels, for one-line error messages."""
  return _short_repr.repr(value)


# Attribute checks: each returns the canonical, hashable value or raises ValueError.
def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_in(lo: int):
  def check(v) -> int:
    if not _is_int(v):
      raise ValueError(f"must be an int, got {short_repr(v)}")
    if not lo <= v <= MAX_ELEMENTS:
      raise ValueError(f"must be an int in [{lo}, {_MAX_TEXT}], got {int(v)}")
    return int(v)
  return check


positive_int = _int_in(1)
nonnegative_int = _int_in(0)


def positive_pair(v) -> tuple[int, int]:
  """An int or a pair of ints, each in [1, MAX_ELEMENTS], as a pair."""
  pair = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
  if len(pair) != 2 or not all(_is_int(d) and 1 <= d <= MAX_ELEMENTS for d in pair):
    raise ValueError(f"must be an int or a pair of ints in [1, {_MAX_TEXT}], got "
                     f"{short_repr(v)}")
  return int(pair[0]), int(pair[1])


def optional_positive_pair(v) -> tuple[int, int] | None:
  return None if v is None else positive_pair(v)


def boolean(v) -> bool:
  if not isinstance(v, (bool, np.bool_)):
    raise ValueError(f"must be true or false, got {short_repr(v)}")
  return bool(v)


def _real(v) -> float:
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                           np.floating)):
    raise ValueError(f"must be a number, got {short_repr(v)}")
  v = float(v)
  if not math.isfinite(v):
    raise ValueError(f"must be finite, got {v}")
  return v


def positive_float(v) -> float:
  v = _real(v)
  if v <= 0:
    raise ValueError(f"must be > 0, got {v}")
  return v


def fraction(v) -> float:
  v = _real(v)
  if not 0 <= v <= 1:
    raise ValueError(f"must be in [0, 1], got {v}")
  return v


def one_of(*choices: str):
  def check(v) -> str:
    if not isinstance(v, str) or v not in choices:
      raise ValueError(f"must be one of {list(choices)}, got {short_repr(v)}")
    return v
  return check


def shape_of_sizes(v) -> Shape:
  """A non-empty list of ints in [1, MAX_ELEMENTS], as a tuple."""
  if (not isinstance(v, (tuple, list)) or not v or
      not all(_is_int(d) and 1 <= d <= MAX_ELEMENTS for d in v)):
    raise ValueError(f"must be a non-empty list of ints in [1, {_MAX_TEXT}], got "
                     f"{short_repr(v)}")
  return tuple(int(d) for d in v)


def normalize_attr(op: str, key: str, value):
  """Canonical, hashable form of one attribute value.

  Raises:
    ValueError: for a value of the wrong type or out of range, saying what it must be.
  """
  return OPS[op].checks[key](value)


def _no_params(attrs, in_shapes):
  return {}


def _zero_flops(attrs, in_shapes, out_shape):
  return 0


def _numel(shape: Shape) -> int:
  return math.prod(shape)


def _spatial(shape: Shape, what: str) -> Shape:
  if len(shape) != 3:
    raise ShapeError(f"{what} needs a feature map (H, W, C), got shape {shape}")
  return shape


def _same_out(size: int, stride: int) -> int:
  return -(-size // stride)


def _check_out(hw: tuple[int, int], what: str) -> None:
  if min(hw) < 1:
    raise ShapeError(f"{what} makes the spatial size {hw}, below 1")


# ----------------------------------------------------------------------------- input
_register(OpSpec(
    name="input", attrs={"shape": REQUIRED}, checks={"shape": shape_of_sizes}, arity=(0, 0),
    shape=lambda a, s: a["shape"],
    params=_no_params, state=_no_params, flops=_zero_flops,
    apply=lambda a, xs, p, st, ctx: (xs[0], None)))


# ------------------------------------------------------------------------------ conv
def _conv_shape(a, s):
  (h, w, c), = [_spatial(x, "conv") for x in s]
  if c % a["groups"] or a["features"] % a["groups"]:
    raise ShapeError(f"groups={a['groups']} must divide input channels {c} and "
                     f"features {a['features']}")
  out = (_same_out(h, a["stride"][0]), _same_out(w, a["stride"][1]))
  _check_out(out, "conv")
  return out + (a["features"],)


def _conv_params(a, s):
  c = s[0][-1]
  kh, kw = a["kernel"]
  p = {"kernel": (kh, kw, c // a["groups"], a["features"])}
  if a["use_bias"]:
    p["bias"] = (a["features"],)
  return p


def _floor_sum(n: int, m: int, a: int, b: int) -> int:
  """``sum(floor((a * j + b) / m) for j in range(n))`` for ``n, m >= 1``, ``a, b >= 0``.

  Euclid-like reduction (as in AtCoder Library's ``floor_sum``): O(log) steps, exact.
  """
  total = 0
  while True:
    if a >= m:
      total += n * (n - 1) // 2 * (a // m)
      a %= m
    if b >= m:
      total += n * (b // m)
      b %= m
    y_max = a * n + b
    if y_max < m:
      return total
    n, b = divmod(y_max, m)
    m, a = a, m


def valid_taps(size: int, kernel: int, stride: int, dilation: int) -> int:
  """Kernel taps that land inside the input, summed over the SAME-padded outputs.

  Taps on the zero padding multiply nothing; XLA's cost analysis does not count them,
  and neither do we (it matters for small maps: a 5x5 kernel on an 8x8 map has 28%
  of its taps on padding). Closed form, so its cost does not grow with the sizes.
  """
  out = _same_out(size, stride)
  pad_total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
  lo = pad_total // 2

  def below(x: int) -> int:
    # Pairs (output o, tap t) whose input position o * stride + t * dilation is < x.
    if x <= 0:
      return 0
    end = min(out, -(-x // stride))  # outputs with at least tap 0 below x
    full = min(end, max(0, -(-(x - (kernel - 1) * dilation) // stride)))  # all taps below
    n = end - full
    # Output o has ceil((x - o * stride) / dilation) taps below x; sum them with
    # o = end - 1 - j so that the numerator grows with j.
    part = _floor_sum(n, dilation, stride, x - (end - 1) * stride + dilation - 1) if n else 0
    return full * kernel + part

  return below(lo + size) - below(lo)


def _conv_macs_per_channel(a, s):
  (h, w, _), = s
  return (valid_taps(h, a["kernel"][0], a["stride"][0], a["dilation"][0]) *
          valid_taps(w, a["kernel"][1], a["stride"][1], a["dilation"][1]))


def _conv_flops(a, s, out):
  c = s[0][-1]
  macs = _conv_macs_per_channel(a, s) * a["features"] * (c // a["groups"])
  return 2 * macs + (_numel(out) if a["use_bias"] else 0)


def _conv(x, kernel, stride, dilation, groups, dtype):
  y = jax.lax.conv_general_dilated(
      x.astype(dtype), kernel.astype(dtype), window_strides=stride, padding="SAME",
      rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, preferred_element_type=jnp.float32)
  return y


def _conv_apply(a, xs, p, st, ctx):
  y = _conv(xs[0], p["kernel"], a["stride"], a["dilation"], a["groups"], ctx.dtype)
  if a["use_bias"]:
    y = y + p["bias"]
  return y, None


_register(OpSpec(
    name="conv",
    attrs={"features": REQUIRED, "kernel": (3, 3), "stride": (1, 1), "dilation": (1, 1),
           "groups": 1, "use_bias": False},
    checks={"features": positive_int, "kernel": positive_pair, "stride": positive_pair,
            "dilation": positive_pair, "groups": positive_int, "use_bias": boolean},
    arity=(1, 1), shape=_conv_shape, params=_conv_params, state=_no_params,
    flops=_conv_flops, apply=_conv_apply))


# ------------------------------------------------------------------------- sep_conv
def _sep_shape(a, s):
  (h, w, c), = [_spatial(x, "sep_conv") for x in s]
  out = (_same_out(h, a["stride"][0]), _same_out(w, a["stride"][1]))
  _check_out(out, "sep_conv")
  return out + (a["features"],)


def _sep_params(a, s):
  c = s[0][-1]
  kh, kw = a["kernel"]
  m = a["multiplier"]
  p = {"depthwise": (kh, kw, 1, c * m), "pointwise": (1, 1, c * m, a["features"])}
  if a["use_bias"]:
    p["bias"] = (a["features"],)
  return p


def _sep_flops(a, s, out):
  c = s[0][-1] * a["multiplier"]
  hw = out[0] * out[1]
  depthwise = _conv_macs_per_channel(a, s) * c
  return 2 * (depthwise + hw * c * a["features"]) + (_numel(out) if a["use_bias"] else 0)


def _sep_apply(a, xs, p, st, ctx):
  x = xs[0]
  y = _conv(x, p["depthwise"], a["stride"], a["dilation"], x.shape[-1], ctx.dtype)
  y = _conv(y, p["pointwise"], (1, 1), (1, 1), 1, ctx.dtype)
  if a["use_bias"]:
    y = y + p["bias"]
  return y, None


_register(OpSpec(
    name="sep_conv",
    attrs={"features": REQUIRED, "kernel": (3, 3), "stride": (1, 1), "dilation": (1, 1),
           "multiplier": 1, "use_bias": False},
    checks={"features": positive_int, "kernel": positive_pair, "stride": positive_pair,
            "dilation": positive_pair, "multiplier": positive_int, "use_bias": boolean},
    arity=(1, 1), shape=_sep_shape, params=_sep_params, state=_no_params,
    flops=_sep_flops, apply=_sep_apply))


# ----------------------------------------------------------------------------- dense
def _dense_shape(a, s):
  (x,) = s
  if len(x) != 1:
    raise ShapeError(f"dense needs a vector input (C,), got shape {x}; add 'gap' or "
                     "'flatten' before it")
  return (a["features"],)


def _dense_params(a, s):
  p = {"kernel": (s[0][0], a["features"])}
  if a["use_bias"]:
    p["bias"] = (a["features"],)
  return p


def _dense_apply(a, xs, p, st, ctx):
  y = jnp.dot(xs[0].astype(ctx.dtype), p["kernel"].astype(ctx.dtype),
              preferred_element_type=jnp.float32)
  if a["use_bias"]:
    y = y + p["bias"]
  return y, None


_register(OpSpec(
    name="dense", attrs={"features": REQUIRED, "use_bias": True},
    checks={"features": positive_int, "use_bias": boolean}, arity=(1, 1),
    shape=_dense_shape, params=_dense_params, state=_no_params,
    flops=lambda a, s, o: 2 * s[0][0] * a["features"] + (a["features"] if a["use_bias"]
                                                          else 0),
    apply=_dense_apply))


# ------------------------------------------------------------------------- batchnorm
def _bn_params(a, s):
  return {"scale": (s[0][-1],), "bias": (s[0][-1],)}


def _bn_state(a, s):
  return {"mean": (s[0][-1],), "var": (s[0][-1],)}


def _bn_apply(a, xs, p, st, ctx):
  x = xs[0].astype(jnp.float32)
  if ctx.train:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    mean_sq = jnp.mean(jnp.square(x), axes)
    if ctx.axis_name is not None:
      mean, mean_sq = jax.lax.pmean((mean, mean_sq), ctx.axis_name)
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    m = a["momentum"]
    new = {"mean": m * st["mean"] + (1 - m) * jax.lax.stop_gradient(mean),
           "var": m * st["var"] + (1 - m) * jax.lax.stop_gradient(var)}
  else:
    mean, var, new = st["mean"], st["var"], None
  inv = jax.lax.rsqrt(var + a["eps"]) * p["scale"]
  return (x - mean) * inv + p["bias"], new


_register(OpSpec(
    name="batchnorm", attrs={"eps": 1e-5, "momentum": 0.9},
    checks={"eps": positive_float, "momentum": fraction}, arity=(1, 1),
    shape=lambda a, s: s[0], params=_bn_params, state=_bn_state,
    flops=lambda a, s, o: 2 * _numel(o), apply=_bn_apply))


# ------------------------------------------------------------------- elementwise ops
def _same_shape(a, s):
  return s[0]


_register(OpSpec(
    name="relu", attrs={}, checks={}, arity=(1, 1), shape=_same_shape, params=_no_params,
    state=_no_params, flops=lambda a, s, o: _numel(o),
    apply=lambda a, xs, p, st, ctx: (jax.nn.relu(xs[0]), None)))

_register(OpSpec(
    name="identity", attrs={}, checks={}, arity=(1, 1), shape=_same_shape, params=_no_params,
    state=_no_params, flops=_zero_flops,
    apply=lambda a, xs, p, st, ctx: (xs[0], None)))

_register(OpSpec(
    name="zero", attrs={}, checks={}, arity=(1, 1), shape=_same_shape, params=_no_params,
    state=_no_params, flops=_zero_flops,
    apply=lambda a, xs, p, st, ctx: (jnp.zeros_like(xs[0]), None)))


# -------------------------------------------------------------------------- pooling
def _pool_shape(name):
  def shape(a, s):
    (h, w, c), = [_spatial(x, name) for x in s]
    stride = a["stride"] or a["window"]
    if a["padding"] == "SAME":
      out = (_same_out(h, stride[0]), _same_out(w, stride[1]))
    else:  # VALID
      out = ((h - a["window"][0]) // stride[0] + 1, (w - a["window"][1]) // stride[1] + 1)
    _check_out(out, name)
    return out + (c,)
  return shape


def _pool_flops(a, s, out):
  return _numel(out) * a["window"][0] * a["window"][1]


def _pool_window(a):
  stride = a["stride"] or a["window"]
  return (1,) + a["window"] + (1,), (1,) + stride + (1,)


def _max_pool(a, xs, p, st, ctx):
  win, strides = _pool_window(a)
  return jax.lax.reduce_window(xs[0], -jnp.inf, jax.lax.max, win, strides,
                               a["padding"]), None


def _avg_pool(a, xs, p, st, ctx):
  # Padding is excluded from the average (count_include_pad=False), as in NB201.
  x = xs[0]
  win, strides = _pool_window(a)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, strides, a["padding"])
  if a["padding"] == "VALID":
    return total / (a["window"][0] * a["window"][1]), None
  # The divisor depends on shapes only: computed here on the host, so that XLA does not
  # constant-fold a reduce-window broadcast to the whole batch (tens of seconds of
  # compilation at batch 512).
  count = np.outer(_same_counts(x.shape[1], win[1], strides[1]),
                   _same_counts(x.shape[2], win[2], strides[2]))
  return total / jnp.asarray(count[None, :, :, None], x.dtype), None


def _same_counts(size: int, window: int, stride: int) -> np.ndarray:
  """How many of a window's taps fall inside the input, per output of "SAME" pooling."""
  out = -(-size // stride)
  pad_lo = max((out - 1) * stride + window - size, 0) // 2
  start = np.arange(out) * stride - pad_lo
  return (np.minimum(start + window, size) - np.maximum(start, 0)).astype(np.float32)


for _name, _fn in (("max_pool", _max_pool), ("avg_pool", _avg_pool)):
  _register(OpSpec(
      name=_name, attrs={"window": (2, 2), "stride": None, "padding": "VALID"},
      checks={"window": positive_pair, "stride": optional_positive_pair,
              "padding": one_of("SAME", "VALID")},
      arity=(1, 1), shape=_pool_shape(_name), params=_no_params, state=_no_params,
      flops=_pool_flops, apply=_fn))


def _gap_shape(a, s):
  return (_spatial(s[0], "gap")[-1],)


_register(OpSpec(
    name="gap", attrs={}, checks={}, arity=(1, 1), shape=_gap_shape, params=_no_params,
    state=_no_params, flops=lambda a, s, o: _numel(s[0]),
    apply=lambda a, xs, p, st, ctx: (jnp.mean(xs[0], axis=(1, 2)), None)))

_register(OpSpec(
    name="flatten", attrs={}, checks={}, arity=(1, 1),
    shape=lambda a, s: (_numel(s[0]),), params=_no_params, state=_no_params,
    flops=_zero_flops,
    apply=lambda a, xs, p, st, ctx: (xs[0].reshape(xs[0].shape[0], -1), None)))


def _crop_shape(a, s):
  h, w, c = _spatial(s[0], "crop")
  out = (h - a["top"] - a["bottom"], w - a["left"] - a["right"])
  _check_out(out, "crop")
  return out + (c,)


def _crop(a, xs, p, st, ctx):
  x = xs[0]
  h, w = x.shape[1:3]
  return x[:, a["top"]:h - a["bottom"], a["left"]:w - a["right"]], None


# Removes border rows/columns: DARTS's factorized reduce reads the input shifted by one.
_register(OpSpec(
    name="crop", attrs={"top": 0, "bottom": 0, "left": 0, "right": 0},
    checks=dict.fromkeys(("top", "bottom", "left", "right"), nonnegative_int), arity=(1, 1),
    shape=_crop_shape, params=_no_params, state=_no_params, flops=_zero_flops, apply=_crop))


# --------------------------------------------------------------------------- merges
def _add_shape(a, s):
  if any(x != s[0] for x in s):
    raise ShapeError(f"add needs equal input shapes, got {list(s)}")
  return s[0]


def _concat_shape(a, s):
  if any(len(x) != len(s[0]) or x[:-1] != s[0][:-1] for x in s):
    raise ShapeError(f"concat needs equal shapes except channels, got {list(s)}")
  return s[0][:-1] + (sum(x[-1] for x in s),)


_register(OpSpec(
    name="add", attrs={}, checks={}, arity=(2, None), shape=_add_shape, params=_no_params,
    state=_no_params, flops=lambda a, s, o: (len(s) - 1) * _numel(o),
    apply=lambda a, xs, p, st, ctx: (sum(xs[1:], xs[0]), None)))

_register(OpSpec(
    name="concat", attrs={}, checks={}, arity=(2, None), shape=_concat_shape, params=_no_params,
    state=_no_params, flops=_zero_flops,
    apply=lambda a, xs, p, st, ctx: (jnp.concatenate(xs, axis=-1), None)))


def conv_out_size(size: int, stride: int) -> int:
  """Output size of a SAME-padded strided op."""
  return _same_out(size, stride)


__all__ = ["OPS", "OpSpec", "ApplyContext", "REQUIRED", "MAX_ELEMENTS", "ShapeError",
           "normalize_attr", "conv_out_size"]
