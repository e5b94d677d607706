"""The optimisers of ``nst.optim``: the fixed-step L-BFGS against the
BFGS formula written out, its safeguards, and the table."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import tiny_config
from nst import optim
from nst.errors import UserError


def _steps(opt, f, x, n):
  """``n`` steps of ``opt`` on ``f`` from ``x``: the points visited. (Each
  step jitted, as the engine runs it: op by op, a step's loops dispatch
  hundreds of small computations.)"""
  @jax.jit
  def step(x, state):
    updates, state = opt.update(jax.grad(f)(x), state, x)
    return x + updates, state
  state, points = opt.init(x), [x]
  for _ in range(n):
    x, state = step(x, state)
    points.append(x)
  return points, state


def _bfgs_inverse(pairs, gamma, n):
  """H from the pairs (s, y), oldest first, by the BFGS update written out:
  H <- (I - rho s y') H (I - rho y s') + rho s s', from H = gamma I."""
  h = gamma * np.eye(n)
  for s, y in pairs:
    rho = 1.0 / (s @ y)
    v = np.eye(n) - rho * np.outer(y, s)
    h = v.T @ h @ v + rho * np.outer(s, s)
  return h


def test_fixed_lbfgs_steps_are_the_bfgs_formulas():
  # A convex quadratic in 6 values with a spread of curvatures: the first
  # step is -g scaled to norm 3; each later one is -H g with H built from
  # every pair so far (memory 10 > steps), gamma = s.y / y.y of the newest.
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  a = q @ np.diag([0.5, 1.0, 2.0, 3.0, 5.0, 8.0]) @ q.T
  f = lambda x: 0.5 * x @ jnp.asarray(a, jnp.float32) @ x
  opt = optim.fixed_lbfgs(10, first_norm=3.0)
  x0 = jnp.asarray(rng.normal(size=6), jnp.float32)
  points, _ = _steps(opt, f, x0, 5)
  p = [np.asarray(x, np.float64) for x in points]
  g = [a @ x for x in p]
  np.testing.assert_allclose(p[1] - p[0], -3.0 * g[0] / np.linalg.norm(g[0]),
                             rtol=1e-5)
  for k in range(1, 5):
    pairs = [(p[i + 1] - p[i], g[i + 1] - g[i]) for i in range(k)]
    s, y = pairs[-1]
    h = _bfgs_inverse(pairs, (s @ y) / (y @ y), 6)
    np.testing.assert_allclose(p[k + 1] - p[k], -h @ g[k], rtol=2e-3,
                               atol=1e-5)


def test_fixed_lbfgs_converges_on_a_quadratic():
  # The unit step after the first: |grad| falls by 1e4 within 30 steps on
  # a 100-value quadratic with curvatures from 1 to 50.
  a = jnp.linspace(1.0, 50.0, 100)
  f = lambda x: 0.5 * jnp.sum(a * x * x)
  points, _ = _steps(optim.fixed_lbfgs(10, first_norm=1.0), f,
                     jnp.ones(100), 30)
  start, end = (float(jnp.linalg.norm(jax.grad(f)(x)))
                for x in (points[0], points[-1]))
  assert end < 1e-4 * start, (start, end)


def test_a_pair_of_negative_curvature_is_not_kept():
  # f = -x0^2 + x1^2 (a saddle): the first step moves along -g; the pair
  # it makes has s.y < 0, so it is not stored and the next direction is
  # -gamma g with the initial gamma (1): still downhill.
  f = lambda x: -x[0] ** 2 + x[1] ** 2
  opt = optim.fixed_lbfgs(5, first_norm=0.1)
  x = jnp.array([1.0, 0.0])
  points, state = _steps(opt, f, x, 2)
  history = state[0]  # fixed_lbfgs's chain: the L-BFGS state first
  assert int(history.kept) == 0 and float(jnp.abs(history.rho).max()) == 0.0
  g = jax.grad(f)(points[1])
  np.testing.assert_allclose(points[2] - points[1], -g, rtol=1e-6)
  assert f(points[2]) < f(points[1]) < f(points[0])


def test_a_zero_gradient_stays_put():
  # A converged start (the content image with no style term): no NaN, no
  # move, at the first step or later.
  f = lambda x: jnp.sum(x * 0.0)
  points, _ = _steps(optim.fixed_lbfgs(5, first_norm=10.0), f,
                     jnp.full(4, 7.0), 3)
  for x in points:
    np.testing.assert_array_equal(x, jnp.full(4, 7.0))
  # The line-search L-BFGS likewise (its first step is scaled the same way).
  opt = optim.make('lbfgs_zoom', optim.hyperparams(tiny_config()), size=4)
  x = jnp.full(4, 7.0)
  state = opt.init(x)

  @jax.jit
  def step(x, state):
    value, grad = optax.value_and_grad_from_state(f)(x, state=state)
    updates, state = opt.update(grad, state, x, value=value, grad=grad,
                                value_fn=f)
    return x + updates, state
  for _ in range(3):
    x, state = step(x, state)
    np.testing.assert_array_equal(x, jnp.full(4, 7.0))


def test_the_history_is_a_ring_of_the_newest_pairs():
  # With memory 2, after 5 steps H is built from the last 2 pairs only.
  a = np.diag([1.0, 2.0, 4.0, 9.0])
  f = lambda x: 0.5 * x @ jnp.asarray(a, jnp.float32) @ x
  points, _ = _steps(optim.fixed_lbfgs(2, first_norm=1.0), f,
                     jnp.array([1.0, -1.0, 0.5, 0.25]), 5)
  p = [np.asarray(x, np.float64) for x in points]
  g = [a @ x for x in p]
  pairs = [(p[i + 1] - p[i], g[i + 1] - g[i]) for i in (2, 3)]
  s, y = pairs[-1]
  h = _bfgs_inverse(pairs, (s @ y) / (y @ y), 4)
  np.testing.assert_allclose(p[5] - p[4], -h @ g[4], rtol=2e-3, atol=1e-6)


def test_the_table_names_every_optimiser_and_refuses_others():
  assert set(optim.OPTIMIZERS) == {'lbfgs', 'lbfgs_zoom', 'adam'}
  assert not optim.get('lbfgs').linesearch
  assert optim.get('lbfgs_zoom').linesearch
  assert optim.get('lbfgs').state_images(10) == 22
  with pytest.raises(UserError, match=r"unknown optimizer 'LBFGS'; "
                     r'accepted: lbfgs, lbfgs_zoom, adam'):
    optim.get('LBFGS')
  hparams = optim.hyperparams(tiny_config())
  for name in optim.OPTIMIZERS:  # each builds and initialises
    state = optim.make(name, hparams, size=12).init(jnp.zeros(12))
    assert jax.tree.leaves(state)


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', ['lbfgs', 'lbfgs_zoom'])
def test_each_log_row_counts_the_evaluations_per_step(optimizer):
  # lbfgs: exactly one per step; lbfgs_zoom: its search's trials (at
  # least one, and on its first step one more, at the start point).
  from helpers import random_vgg19, run_one
  rows = []
  run_one(tiny_config(optimizer=optimizer, num_steps=4, log_every=2),
          random_vgg19(), on_log=lambda _, row: rows.append(row))
  assert [r['step'] for r in rows] == [0, 2, 4]
  assert 'evals_per_step' not in rows[0]  # nothing stepped yet
  per_step = [r['evals_per_step'] for r in rows[1:]]
  if optimizer == 'lbfgs':
    assert per_step == [1.0, 1.0]
  else:
    assert all(e >= 1.0 for e in per_step) and per_step[0] >= 1.5, per_step
