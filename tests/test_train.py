"""Tests of nasjax.train: optimisation, divergence, determinism, data parallelism."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax import data, models, train

SYNTH = data.synthetic()


def tiny_cnn(input_shape=(8, 8, 3), num_classes=4, width=8):
  return nasjax.sequential(input_shape, [
      ("conv", dict(features=width)), ("batchnorm", {}), ("relu", {}),
      ("conv", dict(features=2 * width, stride=2)), ("batchnorm", {}), ("relu", {}),
      ("gap", {}), ("dense", dict(features=num_classes))])


def leaves(net):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves((net.params, net.state))]


# -------------------------------------------------------------------------- learning
def test_sgd_loss_falls_and_accuracy_rises_on_synthetic_data():
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  config = train.TrainConfig(epochs=5, batch_size=32, learning_rate=0.05)
  out, hist = train.fit(net, SYNTH, config, jax.random.key(1))
  assert hist.status == "ok" and hist.steps == 5 * (256 // 32)
  assert len(hist.train_loss) == len(hist.val_accuracy) == 5
  assert hist.train_loss[-1] < 0.6 * hist.train_loss[0], hist.train_loss
  assert hist.val_accuracy[-1] > 0.7, hist.val_accuracy  # chance is 0.25
  assert 0 < hist.compile_seconds < hist.seconds
  before = train.evaluate(net, SYNTH.x_test, SYNTH.y_test)
  after = train.evaluate(out, SYNTH.x_test, SYNTH.y_test)
  assert after["accuracy"] > before["accuracy"] + 0.3, (before, after)
  assert after["loss"] < before["loss"]


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("sgd", 0.05)])
def test_adam_nesterov_bf16_and_augmentation_train(optimizer, lr):
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  config = train.TrainConfig(epochs=4, batch_size=32, optimizer=optimizer, learning_rate=lr,
                             nesterov=optimizer == "sgd", dtype="bfloat16", augment=True,
                             schedule="constant")
  out, hist = train.fit(net, SYNTH, config, jax.random.key(1))
  assert hist.status == "ok"
  assert hist.train_loss[-1] < 0.75 * hist.train_loss[0], hist.train_loss
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(out.params))


def test_max_steps_and_fractional_epochs():
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  _, hist = train.fit(net, SYNTH, train.TrainConfig(epochs=1.5, batch_size=32),
                      jax.random.key(0))
  assert hist.steps == 12 and len(hist.train_loss) == 2
  _, hist = train.fit(net, SYNTH, train.TrainConfig(epochs=3, batch_size=32, max_steps=5),
                      jax.random.key(0))
  assert hist.steps == 5 and len(hist.train_loss) == 1


def test_divergence_stops_with_the_last_finite_network():
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  config = train.TrainConfig(epochs=3, batch_size=32, learning_rate=1e6, momentum=0.0,
                             schedule="constant")
  out, hist = train.fit(net, SYNTH, config, jax.random.key(1))
  assert hist.status == "diverged"
  assert hist.steps < 3 * (256 // 32)
  assert all(np.isfinite(x).all() for x in leaves(out))
  assert all(np.isfinite(v) for v in hist.train_loss)


def test_same_seed_same_result_bitwise_and_input_left_intact():
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  initial = leaves(net)
  config = train.TrainConfig(epochs=2, batch_size=32, augment=True)
  a, ha = train.fit(net, SYNTH, config, jax.random.key(7))
  b, hb = train.fit(net, SYNTH, config, jax.random.key(7))
  c, _ = train.fit(net, SYNTH, config, jax.random.key(8))
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert ha.train_loss == hb.train_loss
  assert max(np.abs(x - y).max() for x, y in zip(leaves(a), leaves(c))) > 1e-3
  # The step donates its buffers; the caller's network must not be among them.
  for x, y in zip(leaves(net), initial):
    np.testing.assert_array_equal(x, y)


def test_multi_device_training_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  script = Path(__file__).with_name("multidevice_check.py")
  proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  assert result["steps"] == [4, 4] and result["status"] == ["ok", "ok"]
  assert result["max_update"] > 1e-2  # the parameters did move
  # Same global batch, BN statistics and gradient: equal up to summation order.
  assert result["max_rel_diff"] < 1e-5, result
  np.testing.assert_allclose(result["loss_many"], result["loss_one"], rtol=1e-5)


# ------------------------------------------------------------------------ evaluation
def test_evaluate_pads_the_last_batch_without_recompiling():
  net = nasjax.init(tiny_cnn(), jax.random.key(3))
  logits = np.asarray(nasjax.apply(net, SYNTH.x_test))
  expected_acc = np.mean(logits.argmax(-1) == SYNTH.y_test)
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  expected_loss = -np.mean(logp[np.arange(64), SYNTH.y_test])
  full = train.evaluate(net, SYNTH.x_test, SYNTH.y_test)
  assert full["accuracy"] == pytest.approx(expected_acc, abs=1e-9)
  assert full["loss"] == pytest.approx(expected_loss, rel=1e-5)
  train.evaluate(net, SYNTH.x_test, SYNTH.y_test, batch_size=16)
  compiled = train._eval_step._cache_size()
  for n in (17, 40, 63):
    part = train.evaluate(net, SYNTH.x_test[:n], SYNTH.y_test[:n], batch_size=16)
    assert part["accuracy"] == pytest.approx(np.mean(logits[:n].argmax(-1) ==
                                                     SYNTH.y_test[:n]), abs=1e-9)
  assert train._eval_step._cache_size() == compiled
  assert np.isnan(train.evaluate(net, SYNTH.x_test[:0], SYNTH.y_test[:0])["accuracy"])


# ---------------------------------------------------------------------- optimiser bits
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_applies_to_kernels_only(optimizer):
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  config = train.TrainConfig(optimizer=optimizer, weight_decay=0.1)
  tx = train.optimizer(config)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, net.params)
  updates, _ = tx.update(zeros, tx.init(net.params), net.params)
  for node, arrays in updates.items():
    for name, u in arrays.items():
      expected = 0.1 * net.params[node][name] if name == "kernel" else 0.0 * u
      np.testing.assert_allclose(u, expected, rtol=1e-6, atol=0, err_msg=f"{node}.{name}")
  assert any(name == "bias" for arrays in updates.values() for name in arrays)
  assert any(name == "scale" for arrays in updates.values() for name in arrays)


def test_learning_rate_schedules():
  cosine = train.TrainConfig(learning_rate=0.2)
  assert train.learning_rate(cosine, 0, 100) == pytest.approx(0.2, rel=1e-12)
  assert train.learning_rate(cosine, 50, 100) == pytest.approx(0.1, rel=1e-12)
  assert train.learning_rate(cosine, 99, 100) == pytest.approx(0.2 * 0.5 * (1 + np.cos(
      np.pi * 0.99)), rel=1e-12)
  constant = train.TrainConfig(learning_rate=0.2, schedule="constant")
  assert train.learning_rate(constant, 99, 100) == 0.2


def test_bad_configs_and_mismatched_data_raise():
  with pytest.raises(ValueError, match="'rmsprop'"):
    train.TrainConfig(optimizer="rmsprop")
  with pytest.raises(ValueError, match="'linear'"):
    train.TrainConfig(schedule="linear")
  with pytest.raises(ValueError, match="int8"):
    train.TrainConfig(dtype="int8")
  net = nasjax.init(tiny_cnn(num_classes=3), jax.random.key(0))
  with pytest.raises(ValueError, match="4 classes"):
    train.fit(net, SYNTH, train.TrainConfig(batch_size=32), jax.random.key(0))
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  with pytest.raises(ValueError, match="batch_size 512"):
    train.fit(net, SYNTH, train.TrainConfig(batch_size=512), jax.random.key(0))


# ------------------------------------------------------------------ model families
TINY_FAMILIES = {
    "plain_cnn": dict(blocks=((8,), (16,))),
    "eas_start_net": dict(variant="tiny"),
    "densenet": dict(growth_rate=4, block_layers=(2, 2), init_features=8),
    "resnet": dict(stages=((8, 1), (16, 1))),
    "nb201": dict(C=4, N=1),
    "darts_cell": dict(C=4, layers=2),
}


def test_evaluate_takes_target_probabilities():
  net, _ = train.fit(nasjax.init(tiny_cnn(), jax.random.key(0)), SYNTH,
                     train.TrainConfig(epochs=1, batch_size=32), jax.random.key(1))
  labels = train.evaluate(net, SYNTH.x_val, SYNTH.y_val, batch_size=16)
  onehot = train.evaluate(net, SYNTH.x_val, train.one_hot(SYNTH.y_val, 4), batch_size=16)
  assert onehot["accuracy"] == labels["accuracy"]
  assert onehot["loss"] == pytest.approx(labels["loss"], rel=1e-6)
  # Soft targets: accuracy is top-1 agreement, loss the cross-entropy against them.
  logits = np.asarray(nasjax.apply(net, SYNTH.x_val), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  soft = train.evaluate(net, SYNTH.x_val, probs.astype(np.float32), batch_size=16)
  assert soft["accuracy"] == 1.0  # a network agrees with its own softmax
  entropy = -np.mean(np.sum(probs * np.log(probs), -1))
  assert soft["loss"] == pytest.approx(entropy, rel=1e-4)
  with pytest.raises(ValueError, match="probabilities"):
    train.evaluate(net, SYNTH.x_val, np.zeros((len(SYNTH.y_val), 3), np.float32))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_built_on_the_host_equals_optax_init(optimizer):
  net = nasjax.init(tiny_cnn(), jax.random.key(0))
  config = train.TrainConfig(optimizer=optimizer, weight_decay=5e-4)
  host = train._initial_opt_state(config, net.params)
  ref = train.optimizer(config).init(net.params)
  assert jax.tree_util.tree_structure(host) == jax.tree_util.tree_structure(ref)
  for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(ref)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, np.asarray(b))


def test_every_family_has_a_tiny_config():
  assert set(TINY_FAMILIES) == set(models.FAMILIES)


@pytest.fixture(scope="module")
def fashion_small():
  return data.load("fashion_mnist_small", limit=128, val_fraction=0.02)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_every_family_learns_fashion_mnist(family, fashion_small):
  arch = models.FAMILIES[family](**TINY_FAMILIES[family],
                                 input_shape=fashion_small.input_shape, num_classes=10)
  net = nasjax.init(arch, jax.random.key(0))
  config = train.TrainConfig(epochs=10, batch_size=32, optimizer="adam", learning_rate=0.02,
                             weight_decay=0.0, schedule="constant")
  _, hist = train.fit(net, fashion_small, config, jax.random.key(1))
  assert hist.status == "ok" and hist.steps == 40
  # First-epoch mean (~ln 10) against the last epoch's; measured ratios are 0.36-0.6.
  assert hist.train_loss[-1] < 0.8 * hist.train_loss[0], hist.train_loss


def test_default_devices_are_the_longest_prefix_dividing_the_batch():
  devs = list(range(8))
  assert train.data_parallel_devices(128, devs) == devs
  assert train.data_parallel_devices(100, devs) == devs[:5]
  assert train.data_parallel_devices(97, devs) == devs[:1]
  assert train.data_parallel_devices(12, devs[:1]) == devs[:1]
  assert len(train.data_parallel_devices(64)) == len(jax.local_devices())


# ------------------------------------------------------------------------ distillation
def test_soft_cross_entropy_with_one_hot_targets_is_cross_entropy():
  logits = jax.random.normal(jax.random.key(0), (6, 5)) * 3.0
  labels = jnp.array([0, 4, 2, 2, 1, 3])
  np.testing.assert_allclose(train.soft_cross_entropy(logits, train.one_hot(labels, 5)),
                             train.cross_entropy(logits, labels), rtol=1e-6, atol=1e-6)
  # At temperature T the loss is T^2 times the cross-entropy of logits / T.
  np.testing.assert_allclose(train.soft_cross_entropy(logits, train.one_hot(labels, 5), 4.0),
                             16.0 * train.cross_entropy(logits / 4.0, labels), rtol=1e-6)


def test_distill_follows_the_teacher_and_shares_fits_compiled_step():
  from nasjax.ops.distill import agreement

  teacher, _ = train.fit(nasjax.init(tiny_cnn(), jax.random.key(0)), SYNTH,
                         train.TrainConfig(epochs=3, batch_size=32), jax.random.key(1))
  student = nasjax.init(tiny_cnn(width=4), jax.random.key(2))
  config = train.TrainConfig(batch_size=32, learning_rate=0.05)
  x = jnp.asarray(SYNTH.x_val)

  out, hist, losses = train.distill(student, teacher, SYNTH, config, steps=40,
                                    key=jax.random.key(3), temperature=2.0)
  assert hist.status == "ok" and hist.steps == len(losses) == 40
  # The loss is the KL divergence plus the teacher's (constant) entropy: it falls by
  # the KL's drop.
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.02, losses
  before, after = agreement(student, teacher, x), agreement(out, teacher, x)
  assert after["kl"] < 0.5 * before["kl"], (before, after)
  assert after["agreement"] > before["agreement"] + 0.2, (before, after)
  assert leaves(student)[0].shape == leaves(out)[0].shape
  # fit of the distilled student with the same config compiles no new train step.
  events = []

  def listener(event, duration, **_):
    if event.endswith("backend_compile_duration"):
      events.append(duration)

  devices = train.data_parallel_devices(config.batch_size)
  mesh, replicated, batch = train._placement(devices)
  net, opt_state = train._prepare(out, config, replicated)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    train._compiled_step(config, mesh, net, opt_state, SYNTH.input_shape, SYNTH.num_classes,
                         batch)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == []
  with pytest.raises(ValueError, match="steps"):
    train.distill(student, teacher, SYNTH, config, steps=0, key=jax.random.key(3))


def test_distillation_targets_in_chunks_equal_targets_at_once(monkeypatch):
  teacher = nasjax.init(tiny_cnn(), jax.random.key(0))
  student = nasjax.init(tiny_cnn(width=4), jax.random.key(2))
  config = train.TrainConfig(batch_size=32, learning_rate=0.05)
  once, _, losses_once = train.distill(student, teacher, SYNTH, config, steps=5,
                                       key=jax.random.key(3))
  monkeypatch.setattr(train, "_TARGET_IMAGES", 64)  # two steps' targets at a time
  chunked, _, losses_chunked = train.distill(student, teacher, SYNTH, config, steps=5,
                                             key=jax.random.key(3))
  np.testing.assert_allclose(losses_chunked, losses_once, rtol=1e-6, atol=1e-7)
  for a, b in zip(leaves(chunked), leaves(once)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_kept_train_steps_are_per_device():
  # The same architecture trained on one device and then on another: each device gets
  # its own compiled step (a step compiled for device 0 rejects device 1's arrays).
  if len(jax.local_devices()) < 2:
    pytest.skip("needs two devices")
  net = nasjax.init(tiny_cnn(width=5), jax.random.key(0))
  config = train.TrainConfig(batch_size=32, max_steps=2)
  results = [train.fit(net, SYNTH, config, jax.random.key(1), devices=[d])
             for d in jax.local_devices()[:2]]
  assert [h.status for _, h in results] == ["ok", "ok"]
  assert results[0][1].train_loss == pytest.approx(results[1][1].train_loss, rel=1e-6)


def test_agreement_and_the_fit_after_a_distillation_compile_nothing_new():
  from nasjax.ops import distill

  config = train.TrainConfig(batch_size=32, learning_rate=0.05)
  teacher, _ = train.fit(nasjax.init(tiny_cnn(), jax.random.key(0)), SYNTH, config,
                         jax.random.key(1))
  student = nasjax.init(tiny_cnn(width=6), jax.random.key(2))  # a shape new to this file
  n = len(SYNTH.y_val)  # agreement on the validation images, as fit validates
  out, info = distill(student, teacher, SYNTH, steps=5, key=jax.random.key(3), config=config,
                      eval_size=n)
  assert info["status"] == "ok"
  # Agreement against a direct computation of both networks' outputs.
  x = np.asarray(SYNTH.x_val[:n], np.float32)
  t = np.asarray(nasjax.apply(teacher, x), np.float64)
  s = np.asarray(nasjax.apply(out, x), np.float64)
  assert info["agreement_after"] == pytest.approx(np.mean(t.argmax(-1) == s.argmax(-1)),
                                                  abs=1e-9)
  pt, ls = jax.nn.softmax(t, -1), jax.nn.log_softmax(s, -1)
  kl = float(np.mean(np.sum(pt * (np.log(pt) - ls), -1)))
  assert info["kl_after"] == pytest.approx(kl, rel=1e-3, abs=1e-5)
  # Training the distilled child with the same config lowers and compiles nothing: the
  # train step and the validation program are the ones distillation used.
  events = []

  def listener(event, duration, **_):
    if event in nasjax.runtime.COMPILE_EVENTS:
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    train.fit(out, SYNTH, config, jax.random.key(4))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == []
