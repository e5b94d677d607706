"""The pure update: ``(params, targets, hparams, image, state) -> (image,
state, metrics)``, built from a ``Program`` alone.

``targets`` (``nst.targets.Targets``), ``hparams`` (``nst.optim.Hparams``)
and ``state`` (``State``) are pytrees of arrays, so one compiled update
serves every member of a group; ``nst.engine`` runs it on a batch of
members (vmapped and sharded) or on one.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nst import images, losses, optim, vgg
from nst.spec import Program, Update
from nst.targets import Targets, features


@struct.dataclass
class State:
  """A member's optimiser state, iterate average and the objective
  evaluations its steps have made since ``init_state``."""
  opt: Any                # the optax state of ``optim.make``
  average: optim.Average
  evals: jnp.ndarray      # int32


def make_model(program: Program | Update, members: int = 1) -> vgg.VGG:
  """The network of ``program``: its architecture, pooling, compute dtype,
  rematerialisation, and where it uses Winograd kernels (with 'auto',
  counting the values of ``members`` images: those a device runs at once,
  ``vmap`` giving the network one)."""
  return vgg.VGG(network=program.network, pooling=program.pooling,
                 dtype=program.dtype, remat=bool(program.remat),
                 winograd_min_size=(vgg.auto_winograd_min_size(members)
                                    if program.convolution == 'auto' else 0))


def prepare_params(program: Program, params, layers, max_side: int,
                   members: int = 1):
  """The variables the step runs with (``vgg.prepare``): backward kernels
  and, for the layers ``program.convolution`` selects up to the deepest of
  ``layers``, Winograd kernels; with 'auto', only for layers large enough
  to use them at ``max_side`` px (the largest image the network sees) with
  ``members`` images at once."""
  return vgg.prepare(params, program.convolution, program.dtype,
                     tuple(layers), max_side=max_side, members=members)


def objective(model, params, targets: Targets, image):
  """Total loss of one image and its parts, one per term
  (``losses.TERMS``: content, style, tv)."""
  feats = features(model, params, image, losses.term_layers(targets.terms))
  return losses.total_loss(feats=feats, image=image, targets=targets.terms,
                           weights=targets.weights)


def make_update(program: Program | Update, members: int = 1) -> Callable:
  """One optimisation step of one image, as a pure function.

  ``update(params, targets, hparams, image, state) -> (image, state,
  metrics)``, ``metrics['loss']`` being the total loss of the image that went
  in (with L-BFGS and ``clip_pixels``, plus the range penalty); the
  state counts the objective evaluations (``State.evals``). ``members``:
  how many images a device runs it for at once (``make_model``).

  ``clip_pixels`` keeps the image within valid pixel values: Adam's by
  projecting it after each step; L-BFGS's by adding
  ``losses.range_penalty`` (times ``targets.range_scale``) to the objective
  it minimises, since its curvature pairs (and a line search) need the
  objective smooth and the point they were measured at. Without it, L-BFGS
  drifts out of range and the clipping of the written image undoes much of
  the style (experiments/recipe).
  """
  model = make_model(program, members)
  kind = optim.get(program.optimizer)
  penalised = program.clip_pixels and kind.penalised
  project = program.clip_pixels and not kind.penalised
  lo, hi = images.pixel_bounds()

  def update(params, targets, hparams, image, state):
    opt = optim.make(program.optimizer, hparams,
                     lbfgs_memory=program.lbfgs_memory, size=image.size)
    opt_state = state.opt
    value_fn = lambda x: objective(model, params, targets, x)[0]
    if penalised:
      unpenalised = value_fn
      value_fn = lambda x: unpenalised(x) + targets.range_scale * (
          losses.range_penalty(x, lo, hi))
    if kind.linesearch:
      value, grad = optax.value_and_grad_from_state(value_fn)(
          image, state=opt_state)
      updates, opt_state = opt.update(
          grad, opt_state, image, value=value, grad=grad, value_fn=value_fn)
    else:
      value, grad = jax.value_and_grad(value_fn)(image)
      updates, opt_state = opt.update(grad, opt_state, image)
    image = optax.apply_updates(image, updates)
    if project:
      image = jnp.clip(image, lo, hi)
    average = optim.average_update(state.average, image, hparams.avg_decay)
    evals = state.evals + kind.evals(opt_state)
    return image, State(opt_state, average, evals), {'loss': value}

  return update


def init_state(program: Program | Update, hparams, image) -> State:
  """The optimiser state and iterate average for ``image``; each leaf owns
  its buffer.

  (L-BFGS's init shares one buffer between leaves; donation needs each leaf
  to own its own. Its init also has weakly typed scalars where its update
  returns strong ones: copied with their dtype made explicit, the step's
  input and output types agree and it compiles once, not twice.)
  """
  opt = optim.make(program.optimizer, hparams,
                   lbfgs_memory=program.lbfgs_memory, size=image.size)
  return jax.tree.map(lambda v: jnp.array(v, dtype=v.dtype, copy=True),
                      State(opt.init(image), optim.average_init(image),
                            jnp.zeros([], jnp.int32)))


def output(hparams, image, state: State):
  """The run's output after the steps so far: the iterate average."""
  return optim.averaged(state.average, hparams.avg_decay, image)


def evaluate(program: Program | Update, params, targets, hparams, image,
             state):
  """``objective`` of the output after the steps so far."""
  return objective(make_model(program), params, targets,
                   output(hparams, image, state))


def make_step(program: Program | Update) -> Callable:
  """``make_update``, jitted, with ``image`` and ``state`` donated.

  Cached by ``program.update``: runs with the same network and optimiser
  share one jitted function, so a second run at the same shapes compiles
  nothing."""
  return _jitted_update(program if isinstance(program, Update) else
                        program.update)


@functools.cache
def _jitted_update(update: Update) -> Callable:
  return jax.jit(make_update(update), donate_argnums=(3, 4))


def clear_cache() -> None:
  """Forgets the jitted updates (``make_step``'s cache): a benchmark's
  fresh start, compiling again as a new process would."""
  _jitted_update.cache_clear()
