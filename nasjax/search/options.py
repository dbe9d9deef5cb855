"""A strategy's options, declared once: a frozen dataclass derived from :class:`Options`.

Each option is a field with its default and, next to it, its check::

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(Options):
      population_size: int = option(64, integer(2))
      mutation: str = option("edge", one_of("edge", "node"))

From the class alone come the registry's defaults (:meth:`Options.defaults`), the
validation of every value (a ``ValueError`` naming the option and the value), the JSON
round trip of a run directory's ``config.json`` (:meth:`Options.to_dict`,
:meth:`Options.from_dict`, which also turns JSON lists back into tuples), the errors for
unknown keys and the check of the ``smoke`` preset when the strategy is registered.

Named sets of options sit on the class too, in :attr:`Options.presets`: ``"paper"``
holds the options with which a strategy follows its paper's rules where its registered
defaults do not (:meth:`Options.preset`, :func:`preset_config`)::

    presets = {"paper": {"select": "first", "fallback": "random"}}
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, ClassVar, Mapping

Check = Callable[[Any], "str | None"]  # a problem with the value, or None


def option(default: Any, check: Check | None = None):
  """A field with ``default`` and ``check(value) -> problem or None``.

  A mutable default (a list, a dict) is stored as a tuple or copied per instance.
  """
  meta = {"check": check}
  if isinstance(default, list):
    default = tuple(default)
  if isinstance(default, dict):
    return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def integer(minimum: int | None = None, maximum: int | None = None, *,
            none: bool = False) -> Check:
  """An int in ``[minimum, maximum]`` (None also allowed with ``none``)."""
  bounds = "".join([f" >= {minimum}" if minimum is not None else "",
                    f" <= {maximum}" if maximum is not None else ""])

  def check(v):
    if v is None and none:
      return None
    if (not _is_int(v) or (minimum is not None and v < minimum)
        or (maximum is not None and v > maximum)):
      return f"must be an int{bounds}" + (" or None" if none else "")
    return None
  return check


def number(minimum: float | None = None, maximum: float | None = None, *,
           open_min: bool = False, open_max: bool = False, none: bool = False) -> Check:
  """A finite real number in ``[minimum, maximum]`` (bounds excluded with ``open_min``,
  ``open_max``)."""
  low = "" if minimum is None else f" {'>' if open_min else '>='} {minimum}"
  high = "" if maximum is None else f" {'<' if open_max else '<='} {maximum}"

  def check(v):
    if v is None and none:
      return None
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if ok and minimum is not None:
      ok = v > minimum if open_min else v >= minimum
    if ok and maximum is not None:
      ok = v < maximum if open_max else v <= maximum
    return None if ok else f"must be a number{low}{high}" + (" or None" if none else "")
  return check


def one_of(*values) -> Check:
  """One of ``values``."""
  def check(v):
    return None if any(v == x and type(v) is type(x) for x in values) else (
        f"must be one of {list(values)}")
  return check


def boolean() -> Check:
  """True or False."""
  return lambda v: None if isinstance(v, bool) else "must be true or false"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """Base of a strategy's options (see the module docstring).

  Attributes:
    num_objectives: the length of the fitness vectors the strategy is told (set by the
      framework from the evaluator's objectives).
  """

  num_objectives: int = option(1, integer(1))
  strategy = "strategy"  # the registry name, for messages (set by subclasses)
  # Named option sets (set by subclasses): preset name -> the options it changes.
  presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, list):
        value = tuple(value)
        object.__setattr__(self, f.name, value)
      check = f.metadata.get("check")
      problem = check(value) if check is not None else None
      if problem:
        raise ValueError(f"{self.strategy}: option {f.name} {problem}, got {value!r}")
    self.check()

  def check(self) -> None:
    """Checks across options (override; raise ``ValueError`` naming the options)."""

  @classmethod
  def names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def from_dict(cls, config: Mapping[str, Any] | None = None, **overrides) -> "Options":
    """The options from a dict (e.g. ``config.json``'s), defaults for missing keys.

    Raises:
      ValueError: naming unknown keys and the options there are, or a bad value.
    """
    config = {**dict(config or {}), **overrides}
    unknown = sorted(set(config) - set(cls.names()))
    if unknown:
      raise ValueError(f"unknown option(s) {unknown} for strategy {cls.strategy!r}; it takes "
                       f"{sorted(n for n in cls.names() if n != 'num_objectives')}")
    return cls(**config)

  @classmethod
  def defaults(cls) -> dict:
    """Every option but ``num_objectives`` with its default, as JSON data."""
    out = cls().to_dict()
    out.pop("num_objectives")
    return out

  @classmethod
  def preset(cls, name: str) -> dict:
    """Every option but ``num_objectives`` under preset ``name``: the defaults updated
    with the preset's options (checked).

    Raises:
      ValueError: naming the presets there are, if ``name`` is not one of them.
    """
    if name not in cls.presets:
      raise ValueError(f"strategy {cls.strategy!r} has no preset {name!r}; it has "
                       f"{sorted(cls.presets) or 'none'}")
    out = cls.from_dict(cls.presets[name]).to_dict()
    out.pop("num_objectives")
    return out

  def to_dict(self) -> dict:
    """The options as JSON data (tuples as lists)."""
    def plain(v):
      if isinstance(v, (tuple, list)):
        return [plain(x) for x in v]
      if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
      return v
    return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def replace(self, **changes) -> "Options":
    return dataclasses.replace(self, **changes)


def preset_names(strategy: str) -> tuple[str, ...]:
  """The names of registered ``strategy``'s option presets (:attr:`Options.presets`),
  sorted; none for a strategy without an options class."""
  from nasjax.search.base import strategy_entry

  options = strategy_entry(strategy).options
  return tuple(sorted(options.presets)) if options is not None else ()


def preset_config(strategy: str, preset: str,
                  config: Mapping[str, Any] | None = None) -> dict:
  """The options of registered ``strategy`` under ``preset`` with ``config`` on top: what
  ``search.run(strategy, ..., config=...)`` and ``bench.bench_nb201`` take.

  Raises:
    ValueError: for an unknown strategy, a strategy without options classes or presets,
      or an unknown preset (naming the ones there are).
  """
  from nasjax.search.base import strategy_entry

  entry = strategy_entry(strategy)
  if entry.options is None:
    raise ValueError(f"strategy {strategy!r} has no presets (it takes a plain dict of "
                     "options)")
  return {**entry.options.preset(preset), **dict(config or {})}
