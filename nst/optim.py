"""Optax optimisers built from the config.

``adam``: Adam with an exponentially decaying learning rate --
``learning_rate`` (2.0 on the 0-255 pixel scale) times ``lr_decay_rate``
(0.94) every ``lr_decay_steps`` (100) steps, staircase -- the schedule of the
TensorFlow script this project started from (``optax.exponential_decay``
with ``staircase=True``).

``lbfgs`` (configs/default.py's): L-BFGS with a zoom line search (the
paper's optimiser). Its update
needs the objective itself (``value_fn``); ``uses_linesearch`` tells the
update step to pass it.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nst.errors import UserError

OPTIMIZERS = ('adam', 'lbfgs')
LBFGS_FIRST_RMS = 10.0  # L-BFGS's first move, grey levels per value (RMS)
ADAM_EPS = 1e-15


def uses_linesearch(name: str) -> bool:
  return name == 'lbfgs'


def check(name: str) -> None:
  if name not in OPTIMIZERS:
    raise UserError(f'unknown optimizer {name!r}; accepted: '
                    f'{", ".join(OPTIMIZERS)}')


@struct.dataclass
class Hparams:
  """A member's numeric optimiser settings, float32 arrays (a pytree)."""
  learning_rate: jnp.ndarray
  lr_decay_rate: jnp.ndarray
  lr_decay_steps: jnp.ndarray
  avg_decay: jnp.ndarray


def hyperparams(config) -> Hparams:
  """The config's numeric optimiser settings as float32 arrays."""
  return Hparams(**{f.name: jnp.asarray(config[f.name], jnp.float32)
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
  whose gradients are small -- and its line search then grows the step
  until the loss responds. Here the first move is ``LBFGS_FIRST_RMS`` grey
  levels per value (RMS) whatever the loss's scale; later steps are
  L-BFGS's own (optax.lbfgs, with a first-step transform in its chain).

  Adam's ``eps`` is ``ADAM_EPS``, far below any gradient a run sees, so that
  Adam's steps do not depend on the loss's scale: with relative loss scaling
  a 256 px image's gradients are about 1e-6 per value, and they shrink with
  the pixel count, toward optax's default of 1e-8. (Not smaller: CPUs
  flush squares below about 1e-38 to zero, and a step is then g / eps.)
  """
  check(name)
  if name == 'adam':
    return optax.adam(schedule(hparams), eps=ADAM_EPS)
  return optax.chain(
      optax.scale_by_lbfgs(memory_size=lbfgs_memory),
      first_step_norm(LBFGS_FIRST_RMS * float(size) ** 0.5),
      optax.scale(-1.0),
      optax.scale_by_zoom_linesearch(max_linesearch_steps=20,
                                     initial_guess_strategy='one'))


class FirstStepState(NamedTuple):
  count: jnp.ndarray  # updates so far


def first_step_norm(norm: float) -> optax.GradientTransformation:
  """Scales the first update to Euclidean norm ``norm``; later ones pass."""

  def init(params):
    del params
    return FirstStepState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    length = optax.tree.norm(updates)
    factor = jnp.where(state.count == 0,
                       norm / jnp.maximum(length, jnp.finfo(jnp.float32).tiny),
                       1.0)
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
