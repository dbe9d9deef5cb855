"""Registries resolve every registered name in a fresh process, whatever it imported."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nasjax
from nasjax import models
from nasjax.ops import MORPHISMS
from nasjax.search import (EVALUATORS, SPACES, NB201Space, Registry, SearchSpace,
                           load_strategies, make_space, register_space)

REPO = Path(nasjax.__file__).resolve().parents[1]

# Run in a fresh process that imports nasjax.search and nothing else of nasjax's, then
# looks up every name of every registry, the registries in the order given. It prints,
# per registry, "ok" or the error of each name.
RESOLVE = textwrap.dedent("""
    import json, sys

    import nasjax.search as search

    names, order = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    def space(name):
      s = search.make_space(name)
      assert type(s) is search.SPACES[name] and s.name == name, s

    def evaluator(kind):
      assert callable(search.EVALUATORS[kind]), kind
      if kind == "train":  # what `nasjax resume` rebuilds: the space comes by name
        for name in names["spaces"]:
          ev = search.make_evaluator({"kind": "train", "space": name})
          assert ev.space.name == name, (name, ev.space)

    def strategy(name):
      assert search.strategy_entry(name).name == name

    def morphism(name):
      from nasjax.ops import MORPHISMS
      assert MORPHISMS[name].name == name

    def family(name):
      from nasjax import models
      assert callable(models.FAMILIES[name])

    lookups = {"spaces": space, "evaluators": evaluator, "strategies": strategy,
               "morphisms": morphism, "families": family}
    out = {}
    for registry in order:
      out[registry] = {}
      for name in names[registry]:
        try:
          lookups[registry](name)
          out[registry][name] = "ok"
        except Exception as e:
          out[registry][name] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
""")


def _all_names() -> dict:
  """Every registered name of every registry (this process imports every module)."""
  load_strategies()
  return {"spaces": sorted(SPACES), "evaluators": sorted(EVALUATORS),
          "strategies": sorted(load_strategies()), "morphisms": sorted(MORPHISMS),
          "families": sorted(models.FAMILIES)}


def test_every_registered_name_resolves_in_a_fresh_process():
  names = _all_names()
  # The spaces defined beside their strategies are the ones a fresh process lacks.
  assert {"layer_string", "pnas_cell", "smash"} <= set(names["spaces"])
  assert {"rl_nas", "pnas", "smash", "lemonade"} <= set(names["strategies"])
  # Each order puts first a registry whose lookups need modules not imported yet.
  orders = [["spaces", "evaluators", "strategies", "morphisms", "families"],
            ["evaluators", "families", "morphisms", "spaces", "strategies"]]
  procs = [subprocess.Popen([sys.executable, "-c", RESOLVE, json.dumps(names),
                             json.dumps(order)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for order in orders]
  for order, proc in zip(orders, procs):
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {r: {n: "ok" for n in names[r]} for r in order}, order


def test_make_space_lists_every_registered_space_when_a_name_is_unknown():
  with pytest.raises(ValueError, match=r"unknown search space 'nope'; known: .*'layer_string'"
                     r".*'pnas_cell'.*'smash'"):
    make_space("nope")


def test_register_space_accepts_the_same_class_again_and_rejects_another():
  assert register_space(NB201Space) is NB201Space
  assert SPACES["nb201"] is NB201Space

  class Impostor(NB201Space):
    pass

  with pytest.raises(ValueError, match="a different search space is already registered as "
                     "'nb201'"):
    register_space(Impostor)
  assert SPACES["nb201"] is NB201Space
  with pytest.raises(ValueError, match="a search space is a SearchSpace subclass"):
    register_space(int)
  assert issubclass(SPACES["smash"], SearchSpace)


def test_a_registry_is_a_dict_that_raises_key_error_for_unknown_names():
  reg = Registry("thing", {"a": 1})
  assert reg["a"] == 1 and reg.get("b", 7) == 7 and "b" not in reg
  with pytest.raises(KeyError):
    reg["b"]
  assert reg.register("b", 2) == 2 and dict(reg) == {"a": 1, "b": 2}
  assert sorted(reg) == ["a", "b"] and len(reg) == 2
  with pytest.raises(ValueError, match="a thing name must be a non-empty string"):
    reg.register("", 3)
