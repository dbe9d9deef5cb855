"""Configuration files written as Python modules (the experiments' ``*_config.py``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def load_variants(path: str | os.PathLike) -> dict:
  """The ``VARIANTS`` dict of the Python file at ``path``.

  The module is registered in :data:`sys.modules` (as ``_nasjax_config_<stem>``, apart
  from any module of the same file name), so that dataclasses defined in it can resolve
  their annotations.
  """
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"no config file at {str(path)!r}")
  spec = importlib.util.spec_from_file_location(f"_nasjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  if not isinstance(getattr(module, "VARIANTS", None), dict):
    raise ValueError(f"config file {str(path)!r} defines no VARIANTS dict")
  return module.VARIANTS
