"""Optax optimisers built from the config, as a table (``OPTIMIZERS``).

``lbfgs`` (configs/default.py's): L-BFGS with a fixed unit step after a
scaled first one -- one objective evaluation per step, the same for every
member of a batch, so a vmapped sweep wastes none (no line search: no
data-dependent loop or branch under ``vmap``). A history pair whose
curvature is not positive is skipped, which keeps the direction one of
descent. (``fixed_lbfgs``.)

``lbfgs_zoom``: L-BFGS with a zoom line search (the paper's optimiser, and
the default before): 1-20 evaluations per step, decided by each member's
own search; its update needs the objective itself (``value_fn``).

``adam``: Adam with an exponentially decaying learning rate --
``learning_rate`` (2.0 on the 0-255 pixel scale) times ``lr_decay_rate``
(0.94) every ``lr_decay_steps`` (100) steps, staircase -- the schedule of the
TensorFlow script this project started from (``optax.exponential_decay``
with ``staircase=True``).

A new optimiser is a builder and one ``Optimizer`` entry; ``nst.step``,
``nst.memory`` and the checks read the table.

Iterate averaging (``avg_decay`` in the config, 0 = off): an exponential
moving average of the image over the steps, bias-corrected as Adam's moments
are -- after t steps ``(1 - d) sum_k d^(t-k) x_k / (1 - d^t)`` -- which is
the output when enabled. The average is always kept (one image-sized buffer);
with d = 0 it is the last iterate exactly, so no setting is special-cased.

The numeric hyper-parameters are arrays (``hyperparams``), not Python
constants, so one compiled update serves every learning rate of a sweep:
``make`` is called inside the traced step with the member's arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from nst.errors import UserError

LBFGS_FIRST_RMS = 10.0  # L-BFGS's first move, grey levels per value (RMS)
ADAM_EPS = 1e-15
CURVATURE_EPS = 1e-8  # a history pair is kept if s.y > this * |s| |y|


@struct.dataclass
class Hparams:
  """A member's numeric optimiser settings, float32 arrays (a pytree)."""
  learning_rate: jnp.ndarray
  lr_decay_rate: jnp.ndarray
  lr_decay_steps: jnp.ndarray
  avg_decay: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimiser of the table.

  build(hparams, memory, size): the optax transformation for an image of
    ``size`` values (``memory``: the config's ``lbfgs_memory``).
  linesearch: its update takes ``value``, ``grad`` and ``value_fn`` (the
    objective), which ``nst.step`` then passes.
  evals(state): objective evaluations (value and gradient) the step that
    produced ``state`` made, an int32 array.
  state_images(memory): image-sized buffers in its state (``nst.memory``).
  history: it keeps ``lbfgs_memory`` past steps (its update copies them).
  penalised: ``clip_pixels`` is a range penalty in the objective, not a
    projection after the step.
  """
  build: Callable[[Hparams, int, int], optax.GradientTransformationExtraArgs]
  linesearch: bool
  evals: Callable[[object], jnp.ndarray]
  state_images: Callable[[int], int]
  history: bool = False
  penalised: bool = False


def _one(state):
  del state
  return jnp.ones([], jnp.int32)


def _zoom_evals(state):
  """The zoom search's evaluations, plus the first step's evaluation at
  the start point (later steps reuse the search's last one)."""
  search = state[-1]
  return (search.info.num_linesearch_steps.astype(jnp.int32)
          + (state[0].count == 1).astype(jnp.int32))


def _adam(hparams, memory, size):
  del memory, size
  return optax.adam(schedule(hparams), eps=ADAM_EPS)


def _lbfgs(hparams, memory, size):
  del hparams
  return fixed_lbfgs(memory, LBFGS_FIRST_RMS * float(size) ** 0.5)


def _lbfgs_zoom(hparams, memory, size):
  del hparams
  return optax.chain(
      optax.scale_by_lbfgs(memory_size=memory),
      first_step_norm(LBFGS_FIRST_RMS * float(size) ** 0.5),
      optax.scale(-1.0),
      optax.scale_by_zoom_linesearch(max_linesearch_steps=20,
                                     initial_guess_strategy='one'))


OPTIMIZERS = {
    'lbfgs': Optimizer(_lbfgs, linesearch=False, evals=_one,
                       state_images=lambda m: 2 * m + 2, history=True,
                       penalised=True),
    'lbfgs_zoom': Optimizer(_lbfgs_zoom, linesearch=True, evals=_zoom_evals,
                            state_images=lambda m: 2 * m + 3, history=True,
                            penalised=True),
    'adam': Optimizer(_adam, linesearch=False, evals=_one,
                      state_images=lambda m: 2),
}


def get(name: str) -> Optimizer:
  """The table's entry for ``name``; a UserError naming the accepted."""
  if name not in OPTIMIZERS:
    raise UserError(f'unknown optimizer {name!r}; accepted: '
                    f'{", ".join(OPTIMIZERS)}')
  return OPTIMIZERS[name]


def check(name: str) -> None:
  get(name)


def uses_linesearch(name: str) -> bool:
  return get(name).linesearch


def hyperparams(config) -> Hparams:
  """The config's numeric optimiser settings as float32 (host) arrays."""
  return Hparams(**{f.name: np.asarray(config[f.name], np.float32)
                    for f in dataclasses.fields(Hparams)})


def schedule(hparams: Hparams) -> optax.Schedule:
  """Staircase exponential decay with array-valued settings."""
  def lr(count):
    stairs = jnp.floor(count / hparams.lr_decay_steps)
    return hparams.learning_rate * hparams.lr_decay_rate ** stairs
  return lr


def make(name: str, hparams, *, lbfgs_memory: int = 10,
         size: int = 1) -> optax.GradientTransformationExtraArgs:
  """The optimiser ``name`` with ``hparams`` (see ``hyperparams``) for an
  image of ``size`` values.

  L-BFGS's first step has no curvature to go by: optax makes it the
  gradient, shortened to norm 1 if longer -- a few thousandths of a grey
  level per value on a whole image, and far less with relative losses,
  whose gradients are small. Here the first move is ``LBFGS_FIRST_RMS``
  grey levels per value (RMS) whatever the loss's scale, for both L-BFGS
  variants; later steps are L-BFGS's own.

  Adam's ``eps`` is ``ADAM_EPS``, far below any gradient a run sees, so that
  Adam's steps do not depend on the loss's scale: with relative loss scaling
  a 256 px image's gradients are about 1e-6 per value, and they shrink with
  the pixel count, toward optax's default of 1e-8. (Not smaller: CPUs
  flush squares below about 1e-38 to zero, and a step is then g / eps.)
  """
  return get(name).build(hparams, lbfgs_memory, size)


class FixedLbfgsState(NamedTuple):
  count: jnp.ndarray   # updates so far
  params: jnp.ndarray  # the previous point and its gradient
  grad: jnp.ndarray
  s: jnp.ndarray       # history of point and gradient differences,
  y: jnp.ndarray       # (memory, *shape), a ring
  rho: jnp.ndarray     # 1 / s.y per pair; 0 = empty slot
  kept: jnp.ndarray    # pairs stored so far (the ring's next slot, mod m)
  gamma: jnp.ndarray   # the initial inverse Hessian's scale, s.y / y.y


def fixed_lbfgs(memory: int, first_norm: float
                ) -> optax.GradientTransformation:
  """L-BFGS with a unit step: ``-H g`` (``scale_by_fixed_lbfgs``), the
  first step ``-g`` scaled to norm ``first_norm`` (``first_step_norm``, as
  in ``lbfgs_zoom``'s chain)."""
  return optax.chain(scale_by_fixed_lbfgs(memory), first_step_norm(first_norm),
                     optax.scale(-1.0))


def scale_by_fixed_lbfgs(memory: int) -> optax.GradientTransformation:
  """``H g``, H from the last ``memory`` pairs of point and gradient
  differences (two-loop recursion), scaled by ``gamma = s.y / y.y`` of the
  newest; with no pairs yet, ``g``. A pair with ``s.y <= CURVATURE_EPS |s|
  |y|`` (not convex along the step) is not stored, so H stays positive
  definite. One array leaf (the image) is supported."""

  def init(params):
    zeros = jnp.zeros((memory,) + params.shape, params.dtype)
    return FixedLbfgsState(
        count=jnp.zeros([], jnp.int32), params=jnp.zeros_like(params),
        grad=jnp.zeros_like(params), s=zeros, y=jnp.zeros_like(zeros),
        rho=jnp.zeros([memory], jnp.float32),
        kept=jnp.zeros([], jnp.int32), gamma=jnp.ones([], jnp.float32))

  def update(grad, state, params):
    s, y = params - state.params, grad - state.grad
    sy, ss, yy = jnp.vdot(s, y), jnp.vdot(s, s), jnp.vdot(y, y)
    keep = (state.count > 0) & (sy > CURVATURE_EPS * jnp.sqrt(ss * yy))
    slot = state.kept % memory
    put = lambda ring, new: ring.at[slot].set(
        jnp.where(keep, new, ring[slot]))
    s_ring, y_ring = put(state.s, s), put(state.y, y)
    rho = put(state.rho, 1.0 / jnp.where(keep, sy, 1.0))
    kept = state.kept + keep.astype(jnp.int32)
    gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), state.gamma)
    newest_first = (kept - 1 - jnp.arange(memory)) % memory

    def back(q, i):
      a = rho[i] * jnp.vdot(s_ring[i], q)
      return q - a * y_ring[i], a

    q, a = jax.lax.scan(back, grad, newest_first)

    def forward(r, ia):
      i, a = ia
      b = rho[i] * jnp.vdot(y_ring[i], r)
      return r + (a - b) * s_ring[i], None

    r, _ = jax.lax.scan(forward, gamma * q, (newest_first[::-1], a[::-1]))
    return r, FixedLbfgsState(
        count=optax.safe_increment(state.count), params=params, grad=grad,
        s=s_ring, y=y_ring, rho=rho, kept=kept, gamma=gamma)

  return optax.GradientTransformation(init, update)


class FirstStepState(NamedTuple):
  count: jnp.ndarray  # updates so far


def first_step_norm(norm: float) -> optax.GradientTransformation:
  """Scales the first update to Euclidean norm ``norm``; later ones pass."""

  def init(params):
    del params
    return FirstStepState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    length = optax.tree.norm(updates)  # 0 at a converged start
    factor = jnp.where(state.count == 0,
                       norm / jnp.where(length > 0, length, 1.0), 1.0)
    return (jax.tree.map(lambda u: u * factor.astype(u.dtype), updates),
            FirstStepState(count=optax.safe_increment(state.count)))

  return optax.GradientTransformation(init, update)


def make_optimizer(config, size: int = 1
                   ) -> optax.GradientTransformationExtraArgs:
  """``make`` with everything taken from ``config``, for an image of
  ``size`` values."""
  return make(config.optimizer, hyperparams(config),
              lbfgs_memory=config.lbfgs_memory, size=size)


@struct.dataclass
class Average:
  """The iterate average's running state."""
  sum: jnp.ndarray    # decayed sum of the iterates
  count: jnp.ndarray  # iterates added


def average_init(image) -> Average:
  """The iterate average before any step: an empty sum."""
  return Average(jnp.zeros_like(image), jnp.zeros((), jnp.int32))


def average_update(average: Average, image, decay) -> Average:
  """Adds the new iterate ``image`` to the moving average."""
  return Average(decay * average.sum + (1 - decay) * image,
                 average.count + 1)


def averaged(average: Average, decay, image):
  """The bias-corrected average; ``image`` itself before the first step."""
  count = average.count
  correction = 1 - decay ** jnp.maximum(count, 1).astype(jnp.float32)
  return jnp.where(count > 0, average.sum / correction, image)
