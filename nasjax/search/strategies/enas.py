"""ENAS: efficient NAS via parameter sharing (Pham et al., ICML 2018).

An LSTM controller emits a path one decision at a time (each code position of the
space: an NB201 edge's op, or a DARTS node's input and op), feeding each choice back as
the next input. Training alternates two phases over the shared weights of a supernet:

1. child phase: ``child_steps`` SGD steps on training batches, each on one path sampled
   from the controller;
2. controller phase: ``controller_steps`` REINFORCE updates; each samples
   ``controller_batch`` paths and rewards each with its accuracy on a validation batch
   with the shared weights (batch norm on the batch's statistics, no recalibration).
   The loss is ``-(R - b) * log p(path) - entropy_weight * H(policy)``, with the
   baseline ``b`` a moving average of rewards (updated before the advantage is taken;
   it starts at the first rewards' mean), minimised with Adam.

The controller's logits are ``tanh_constant * tanh(logits / temperature)`` (ENAS's
sampling regularisers). To derive the result, ``derive_samples`` paths are sampled
from the trained controller and ranked by shared-weight accuracy on the validation
split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import supernet as sn_lib
from nasjax.search.strategies import oneshot
from nasjax.search.base import register_strategy
from nasjax.search.spaces import SearchSpace


class Controller(nn.Module):
  """An LSTM policy over the codes of a space.

  Attributes:
    num_choices: choices of each code position (``space.num_choices``).
    hidden: LSTM width.
    tanh_constant: logits are squashed to ``(-tanh_constant, tanh_constant)``
      (None: no squashing).
    temperature: logits are divided by it before the squashing.
  """

  num_choices: Sequence[int]
  hidden: int = 64
  tanh_constant: float | None = 1.5
  temperature: float = 5.0

  def setup(self):
    L, K = len(self.num_choices), max(self.num_choices)
    # Token pos * K + choice is the choice made at position pos; L * K starts.
    self.embed = nn.Embed(L * K + 1, self.hidden)
    self.lstm = nn.LSTMCell(self.hidden)
    self.heads = [nn.Dense(K) for _ in range(L)]

  def _logits(self, pos: int, h: jax.Array) -> jax.Array:
    K = max(self.num_choices)
    logits = self.heads[pos](h) / self.temperature
    if self.tanh_constant is not None:
      logits = self.tanh_constant * jnp.tanh(logits)
    return jnp.where(jnp.arange(K) < self.num_choices[pos], logits, -jnp.inf)

  def _run(self, n: int, choose):
    L, K = len(self.num_choices), max(self.num_choices)
    carry = (jnp.zeros((n, self.hidden)), jnp.zeros((n, self.hidden)))
    token = jnp.full((n,), L * K, jnp.int32)
    codes, logp, ent = [], jnp.zeros((n,)), jnp.zeros((n,))
    for pos in range(L):
      carry, h = self.lstm(carry, self.embed(token))
      lp = jax.nn.log_softmax(self._logits(pos, h), axis=-1)
      c = choose(pos, lp)
      p = jnp.exp(lp)
      logp = logp + jnp.take_along_axis(lp, c[:, None], axis=-1)[:, 0]
      ent = ent - jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)
      codes.append(c)
      token = pos * K + c
    return jnp.stack(codes, axis=1), logp, ent

  def __call__(self, codes: jax.Array):
    """``(log p (n,), entropy (n,))`` of given codes ``(n, L)`` (teacher forcing)."""
    _, logp, ent = self._run(codes.shape[0], lambda pos, lp: codes[:, pos])
    return logp, ent

  def sample(self, key: jax.Array, n: int):
    """``(codes (n, L) int32, log p (n,), entropy (n,))`` sampled from the policy."""
    keys = jax.random.split(key, len(self.num_choices))
    return self._run(n, lambda pos, lp: jax.random.categorical(keys[pos], lp).astype(
        jnp.int32))


@functools.lru_cache(maxsize=16)
def _controller_fns(controller: Controller, lr: float, entropy_weight: float,
                    baseline_decay: float):
  tx = optax.adam(lr)

  @functools.partial(jax.jit, static_argnames=("n",))
  def sample(params, key, n):
    return controller.apply(params, key, n, method=Controller.sample)

  @jax.jit
  def update(params, opt_state, baseline, started, codes, rewards):
    mean_r = jnp.mean(rewards)
    baseline = jnp.where(started, baseline_decay * baseline + (1 - baseline_decay) * mean_r,
                         mean_r)
    adv = rewards - baseline

    def loss_fn(p):
      logp, ent = controller.apply(p, codes)
      return -jnp.mean(adv * logp) - entropy_weight * jnp.mean(ent), jnp.mean(ent)

    (loss, ent), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, baseline, loss, ent

  return tx, sample, update


@flax.struct.dataclass
class EnasLog:
  """Per-round records (rows past ``count`` unused): weight ``step``, mean child
  ``train_loss``, mean controller ``reward``, policy ``entropy`` and ``baseline``."""

  step: jax.Array
  train_loss: jax.Array
  reward: jax.Array
  entropy: jax.Array
  baseline: jax.Array
  count: jax.Array

  @classmethod
  def empty(cls, n: int) -> "EnasLog":
    nan = jnp.full((n,), jnp.nan, jnp.float32)
    return cls(jnp.zeros((n,), jnp.int32), nan, nan, nan, nan, jnp.zeros((), jnp.int32))

  def add(self, **values) -> "EnasLog":
    i = int(self.count)
    return self.replace(**{k: getattr(self, k).at[i].set(v) for k, v in values.items()},
                        count=self.count + 1)

  def rows(self) -> list[dict]:
    fields = ("step", "train_loss", "reward", "entropy", "baseline")
    return [{f: float(np.asarray(getattr(self, f))[i]) for f in fields}
            for i in range(int(self.count))]


@flax.struct.dataclass
class EnasState:
  """Attributes:
    supernet: shared weights and statistics.
    momentum: ``(P,)`` SGD momentum.
    controller: the controller's flax parameters.
    controller_opt: Adam's state.
    baseline: ``()`` float32 reward moving average; ``started``: ``()`` bool.
    data_key: ``(2,)`` uint32 key of batches and samples.
    step, phase, count: ``()`` int32 weight steps, phases done, candidates told.
    log: :class:`EnasLog`, one row per round.
    proposals: the ranking proposed from.
  """

  supernet: sn_lib.Supernet
  momentum: jax.Array
  controller: Any
  controller_opt: Any
  baseline: jax.Array
  started: jax.Array
  data_key: jax.Array
  step: jax.Array
  phase: jax.Array
  log: EnasLog
  proposals: oneshot.Proposals
  count: jax.Array


DEFAULT_CONFIG = {**oneshot.COMMON_CONFIG, "weight_decay": 5e-4, "impl": "switch",
                  "child_steps": None, "controller_steps": 10, "controller_batch": 10,
                  "controller_lr": 3.5e-3, "entropy_weight": 1e-4, "baseline_decay": 0.99,
                  "hidden": 64, "tanh_constant": 1.5, "temperature": 5.0,
                  "derive_samples": 64, "derive_bn": "batch", "eval_examples": None,
                  "proposals": 64}


@dataclasses.dataclass(eq=False)
class Enas:
  """ENAS as a strategy (see :mod:`nasjax.search.strategies.oneshot` for how ask/tell work).

  ``child_steps`` weight steps (default: one epoch) alternate with ``controller_steps``
  controller updates.

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    options: :data:`DEFAULT_CONFIG` keys (missing ones take the defaults).
    data: the data set; loaded from ``options`` when None.
  """

  space: SearchSpace
  options: dict
  data: Any = None
  name = "enas"

  def __post_init__(self):
    self.options = cfg = oneshot.merge_options(
        self.name, self.options, DEFAULT_CONFIG,
        ("controller_steps", "controller_batch", "hidden", "derive_samples", "proposals"))
    if cfg["impl"] not in sn_lib.IMPLS:
      raise ValueError(f"impl must be one of {sn_lib.IMPLS}, got {cfg['impl']!r}")
    if cfg["derive_bn"] not in sn_lib.BN_MODES:
      raise ValueError(f"derive_bn must be one of {sn_lib.BN_MODES}, got {cfg['derive_bn']!r}")
    if not 0 <= cfg["baseline_decay"] < 1:
      raise ValueError(f"baseline_decay must lie in [0, 1), got {cfg['baseline_decay']!r}")
    if self.data is None:
      self.data = oneshot.load_data(cfg)
    self.spec = sn_lib.supernet_for_space(self.space, self.data.input_shape,
                                          self.data.num_classes, affine=cfg["affine"],
                                          remat=cfg["remat"])
    self.opt = oneshot.sgd_from_config(cfg)
    self.total = oneshot.total_steps(cfg, len(self.data.y_train))
    per_epoch = max(len(self.data.y_train) // cfg["batch_size"], 1)
    self.child_steps = cfg["child_steps"] or per_epoch
    if not isinstance(self.child_steps, int) or self.child_steps < 1:
      raise ValueError(f"child_steps must be a positive int or None, got "
                       f"{cfg['child_steps']!r}")
    self.controller = Controller(tuple(self.space.num_choices), hidden=cfg["hidden"],
                                 tanh_constant=cfg["tanh_constant"],
                                 temperature=float(cfg["temperature"]))
    self.tx, self._sample, self._update = _controller_fns(
        self.controller, float(cfg["controller_lr"]), float(cfg["entropy_weight"]),
        float(cfg["baseline_decay"]))

  def config(self) -> dict:
    """The options, as the run directory records them."""
    return dict(self.options)

  def init(self, key) -> EnasState:
    k_net, k_ctrl, k_data = jax.random.split(key, 3)
    sn = self.spec.init(k_net)
    ctrl = self.controller.init(k_ctrl, jnp.zeros((1, self.space.length), jnp.int32))
    z = jnp.zeros((), jnp.int32)
    rounds = -(-self.total // self.child_steps) + self.options["phases"]
    return EnasState(sn, self.opt.init(sn.params), ctrl, self.tx.init(ctrl),
                     jnp.zeros((), jnp.float32), jnp.zeros((), bool),
                     jax.random.key_data(k_data).astype(jnp.uint32), z, z,
                     EnasLog.empty(rounds),
                     oneshot.Proposals.empty(self.options["proposals"], self.space.length), z)

  def _key(self, state, tag: int):
    return jax.random.fold_in(jax.random.wrap_key_data(state.data_key), tag)

  def sample(self, state: EnasState, key, n: int) -> np.ndarray:
    """``(n, L)`` codes sampled from the controller."""
    codes, _, _ = self._sample(state.controller, key, n)
    return np.asarray(jax.vmap(self.space.canonical)(codes))

  def rewards(self, sn: sn_lib.Supernet, codes, x, y) -> np.ndarray:
    """Shared-weight accuracy of each code on one batch (batch-norm batch statistics)."""
    mask = np.ones(len(y), bool)
    out = [sn_lib.correct_count(sn, jnp.asarray(c, jnp.int32), x, y, mask,
                                self.options["impl"], True) for c in codes]
    return np.asarray([float(v) for v in out]) / len(y)

  def train(self, state: EnasState, until: int) -> EnasState:
    """Child and controller rounds up to weight step ``until``."""
    cfg = self.options
    data = self.data
    step0 = int(state.step)
    train = oneshot.BatchStream(data.x_train, data.y_train, cfg["batch_size"],
                                self._key(state, 0), start=step0, augment=cfg["augment"])
    vbs = min(cfg["batch_size"], len(data.y_val))
    val = oneshot.BatchStream(data.x_val, data.y_val, vbs, self._key(state, 1),
                              start=(step0 // self.child_steps) * cfg["controller_steps"])
    k_child, k_ctrl = self._key(state, 2), self._key(state, 3)
    step_fn = oneshot.weight_step_fn(self.opt, True, cfg["impl"])
    sn, mom = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True),
                                     (state.supernet, state.momentum))
    ctrl, c_opt, baseline, started, log = (state.controller, state.controller_opt,
                                           state.baseline, state.started, state.log)
    step = step0
    while step < until:
      end = min(until, (step // self.child_steps + 1) * self.child_steps)
      losses = []
      for s in range(step, end):
        x, y = next(train)
        path, _, _ = self._sample(ctrl, jax.random.fold_in(k_child, s), 1)
        lr = np.float32(oneshot.cosine_lr(s, self.total, cfg["learning_rate"],
                                          cfg["min_learning_rate"]))
        sn, mom, loss, _ = step_fn(sn, mom, x, y, path[0], lr)
        losses.append(loss)
      step = end
      if step % self.child_steps and step != self.total:
        continue  # the round is finished by the next call
      round_ = step // self.child_steps
      rewards, ents = [], []
      for c in range(cfg["controller_steps"]):
        k = jax.random.fold_in(k_ctrl, round_ * cfg["controller_steps"] + c)
        codes, _, _ = self._sample(ctrl, k, cfg["controller_batch"])
        xv, yv = next(val)
        r = self.rewards(sn, np.asarray(codes), xv, yv)
        ctrl, c_opt, baseline, _, ent = self._update(ctrl, c_opt, baseline, started, codes,
                                                     jnp.asarray(r, jnp.float32))
        started = jnp.ones((), bool)
        rewards.append(r.mean())
        ents.append(float(ent))
      log = log.add(step=step, train_loss=float(np.mean(np.asarray(losses))) if losses
                    else float("nan"), reward=float(np.mean(rewards)),
                    entropy=float(np.mean(ents)), baseline=float(baseline))
    return state.replace(supernet=sn, momentum=mom, controller=ctrl, controller_opt=c_opt,
                         baseline=baseline, started=started,
                         step=jnp.asarray(until, jnp.int32), log=log)

  def derive(self, state: EnasState) -> tuple[np.ndarray, np.ndarray]:
    """``derive_samples`` controller samples and their shared-weight validation accuracy."""
    cfg = self.options
    key = jax.random.fold_in(self._key(state, 4), int(state.phase))
    codes = self.sample(state, key, cfg["derive_samples"])
    scores = sn_lib.score_paths(state.supernet, codes, self.data, bn=cfg["derive_bn"],
                                max_examples=cfg["eval_examples"], impl=cfg["impl"],
                                seed=cfg["data_seed"], calib_batch_size=cfg["batch_size"])
    return codes, scores

  def ask(self, key, state: EnasState):
    """Run the next phase (if any), then propose the best-ranked sample not proposed yet.

    Returns:
      ``(codes (1, L) int32, state)``.
    """
    del key  # the search is deterministic given init's key
    phase = int(state.phase)
    if phase < self.options["phases"]:
      state = self.train(state, oneshot.phase_end(phase, self.options["phases"], self.total))
      codes, scores = self.derive(state)
      state = state.replace(phase=state.phase + 1, proposals=oneshot.Proposals.from_scores(
          codes, scores, self.options["proposals"]))
    return oneshot.propose(state, self.options["phases"])

  def tell(self, key, state: EnasState, candidates, fitness) -> EnasState:
    del key, fitness
    return oneshot.count_told(state, candidates)


def _make(space: SearchSpace, config: dict) -> Enas:
  return Enas(space, dict(config))


register_strategy(
    "enas", _make, spaces=("nb201", "darts"), multi_objective=False, jittable=False,
    default_config=DEFAULT_CONFIG,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"epochs": 1.0, "max_steps": 4, "data_limit": 256, "batch_size": 16,
                      "child_steps": 2, "controller_steps": 2, "controller_batch": 2,
                      "hidden": 8, "derive_samples": 4, "eval_examples": 64},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="ENAS: LSTM controller trained with REINFORCE on shared-weight accuracy, "
                "alternating with shared-weight training")
