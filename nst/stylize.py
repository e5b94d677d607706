"""Targets -> initial image -> jitted update step -> loop.

The data flow, one way:
  1. ``make_targets``: content features and style Gram matrices are computed
     once, together with the loss weights, into one pytree (``targets``);
  2. ``init_image``: the content image, white noise, or a given image;
  3. ``make_update``: one pure ``(params, targets, hparams, image,
     opt_state) -> (image, opt_state, metrics)``, VGG params passed in;
     ``make_step`` jits it with the image and optimiser state donated
     (``nst.sweep`` vmaps the same function over many configs);
  4. ``stylize``: runs the step, calling back for logging and saving.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst import images, losses, optim, vgg
from nst.errors import UserError

INITS = ('content', 'noise')


def layer_weights(layers, weights, default) -> dict[str, float]:
  """{layer: weight}; an empty ``weights`` gives every layer ``default``."""
  weights = tuple(weights) or (default,) * len(layers)
  return dict(zip(layers, map(float, weights)))


def min_image_side(config) -> int:
  """Smallest image side (px) at which every requested layer is non-empty."""
  return vgg.min_size(tuple(config.content_layers) +
                      tuple(config.style_layers))


def check_content_shape(config, shape) -> None:
  """Raises a UserError if the loaded content image is too small."""
  h, w = shape[:2]
  needed = min_image_side(config)
  if min(h, w) < needed:
    raise UserError(f'at image_size={config.image_size} the content image is '
                    f'{w}x{h} px; the requested layers need a shorter side of '
                    f'at least {needed} px: raise image_size')


def check_config(config) -> None:
  """Raises a UserError for config values that cannot run.

  Called before any image is read or anything compiled.
  """
  network = vgg.check_network(config.network)
  optim.check(config.optimizer)
  if not config.style_layers and not config.content_layers:
    raise UserError('content_layers and style_layers are both empty; name at '
                    'least one layer')
  for kind in ('content', 'style'):
    layers = tuple(config[f'{kind}_layers'])
    weights = tuple(config[f'{kind}_layer_weights'])
    vgg.check_layers(layers, network)
    if len(set(layers)) != len(layers):
      raise UserError(f'{kind}_layers {layers} names a layer twice')
    if weights and len(weights) != len(layers):
      raise UserError(f'{kind}_layer_weights has {len(weights)} values for '
                      f'{len(layers)} {kind}_layers {layers}; give one per '
                      'layer, or () for the default')
    for w in weights:
      if not (math.isfinite(w) and w >= 0):
        raise UserError(f'{kind}_layer_weights {weights}: each must be a '
                        'finite number >= 0')
  for field in ('content_weight', 'style_weight', 'tv_weight',
                'learning_rate', 'init_noise_std'):
    value = config[field]
    if not (math.isfinite(value) and value >= 0):
      raise UserError(f'{field}={value!r}: accepted is a finite number >= 0')
  if config.image_size < min_image_side(config):
    raise UserError(f'image_size={config.image_size} is too small for the '
                    f'requested layers; accepted: >= {min_image_side(config)}')
  if not (math.isfinite(config.lr_decay_rate) and config.lr_decay_rate > 0):
    raise UserError(f'lr_decay_rate={config.lr_decay_rate!r}: accepted is a '
                    'finite number > 0')
  for field, least in (('num_steps', 0), ('lr_decay_steps', 1),
                       ('lbfgs_memory', 1), ('log_every', 0),
                       ('save_every', 0)):
    if config[field] < least:
      raise UserError(f'{field}={config[field]}: accepted is >= {least}')
  if not (config.init in INITS or images.is_builtin(config.init)
          or Path(config.init).expanduser().is_file()):
    raise UserError(f'init={config.init!r}; accepted: content, noise, or the '
                    'path of an existing image')


@functools.partial(jax.jit, static_argnums=(0, 3))
def _features(model, params, image, layers):
  """Features of one (H, W, 3) image, without the batch axis."""
  return {k: v[0] for k, v in model.apply(params, image[None], layers).items()}


def make_targets(config, model, params, content, style, *,
                 content_layers=None, style_layers=None) -> dict[str, Any]:
  """Everything the objective compares against, and its weights.

  Returns a pytree of arrays: content features, style Gram matrices, the
  per-layer weights and alpha, beta, tv_weight. Computed once, outside the
  step. ``content_layers`` / ``style_layers`` (default: the config's) may
  name more layers than the config uses: those get weight 0, so configs with
  different layer sets share one pytree structure (and one compiled step).
  """
  content_w = layer_weights(config.content_layers,
                            config.content_layer_weights, 1.0)
  style_w = layer_weights(config.style_layers, config.style_layer_weights,
                          1.0 / max(1, len(config.style_layers)))
  for own, union in ((content_w, content_layers), (style_w, style_layers)):
    if union is not None:
      missing = [l for l in own if l not in union]
      if missing:
        raise ValueError(f'layers {missing} are not in {tuple(union)}')
  if content_layers is not None:
    content_w = {l: content_w.get(l, 0.0) for l in content_layers}
  if style_layers is not None:
    style_w = {l: style_w.get(l, 0.0) for l in style_layers}
  content_feats = (_features(model, params, jnp.asarray(content),
                             tuple(content_w)) if content_w else {})
  style_feats = (_features(model, params, jnp.asarray(style), tuple(style_w))
                 if style_w else {})
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return {
      'content': content_feats,
      'style': {l: losses.gram(f) for l, f in style_feats.items()},
      'content_weights': jax.tree.map(f32, content_w),
      'style_weights': jax.tree.map(f32, style_w),
      'alpha': f32(config.content_weight),
      'beta': f32(config.style_weight),
      'tv_weight': f32(config.tv_weight),
  }


def objective(model, params, targets, image):
  """Total loss of one image and its parts (content, style, tv)."""
  layers = tuple(targets['content']) + tuple(
      l for l in targets['style'] if l not in targets['content'])
  feats = _features(model, params, image, layers)
  return losses.total_loss(
      feats=feats, image=image, content_targets=targets['content'],
      style_grams=targets['style'],
      content_weights=targets['content_weights'],
      style_weights=targets['style_weights'], alpha=targets['alpha'],
      beta=targets['beta'], tv_weight=targets['tv_weight'])


def init_image(config, content: np.ndarray) -> np.ndarray:
  """The starting image: content (default), seeded white noise, or a file."""
  if config.init == 'content':
    return np.asarray(content, np.float32)
  if config.init == 'noise':
    key = jax.random.key(config.seed)
    return np.asarray(jax.random.normal(key, content.shape) *
                      config.init_noise_std, np.float32)
  h, w = content.shape[:2]
  return images.preprocess(images.resize_to(images.read_rgb(config.init), h, w))


def make_update(model, *, optimizer: str, lbfgs_memory: int,
                clip: bool) -> Callable:
  """One optimisation step of one image, as a pure function.

  ``update(params, targets, hparams, image, opt_state) -> (image, opt_state,
  metrics)``, ``metrics['loss']`` being the total loss of the image that went
  in. ``hparams`` are the optimiser's array settings (``optim.hyperparams``),
  so the same function serves every member of a sweep under ``vmap``. With
  ``clip`` the image is projected onto valid pixel values after each step
  (not with a line search, whose cached value would then be stale).
  """
  linesearch = optim.uses_linesearch(optimizer)
  lo, hi = images.pixel_bounds()

  def update(params, targets, hparams, image, opt_state):
    opt = optim.make(optimizer, hparams, lbfgs_memory=lbfgs_memory)
    value_fn = lambda x: objective(model, params, targets, x)[0]
    if linesearch:
      value, grad = optax.value_and_grad_from_state(value_fn)(
          image, state=opt_state)
      updates, opt_state = opt.update(
          grad, opt_state, image, value=value, grad=grad, value_fn=value_fn)
    else:
      value, grad = jax.value_and_grad(value_fn)(image)
      updates, opt_state = opt.update(grad, opt_state, image)
    image = optax.apply_updates(image, updates)
    if clip and not linesearch:
      image = jnp.clip(image, lo, hi)
    return image, opt_state, {'loss': value}

  return update


def init_state(optimizer: str, lbfgs_memory: int, hparams, image):
  """The optimiser state for ``image``; each leaf owns its buffer.

  (L-BFGS's init shares one buffer between leaves; donation needs each leaf
  to own its own.)
  """
  opt = optim.make(optimizer, hparams, lbfgs_memory=lbfgs_memory)
  return jax.tree.map(jnp.copy, opt.init(image))


def make_step(model, *, optimizer: str, lbfgs_memory: int = 10,
              clip: bool = False) -> Callable:
  """``make_update``, jitted, with ``image`` and ``opt_state`` donated."""
  update = make_update(model, optimizer=optimizer, lbfgs_memory=lbfgs_memory,
                       clip=clip)
  return jax.jit(update, donate_argnums=(3, 4))


def stylize(config, params, content: np.ndarray, style: np.ndarray, *,
            on_log: Callable[[int, dict], None] | None = None,
            on_save: Callable[[int, np.ndarray], None] | None = None):
  """Runs the optimisation; returns the final image and its losses.

  ``content`` and ``style`` are Caffe-convention (H, W, 3) arrays. ``on_log``
  gets ``(step, metrics)`` every ``config.log_every`` steps and at the end,
  with the losses of the image after that many updates; ``on_save`` gets
  ``(step, image)`` every ``config.save_every`` steps.
  """
  check_config(config)
  model = vgg.VGG(network=config.network, pooling=config.pooling)
  targets = make_targets(config, model, params, content, style)
  hparams = optim.hyperparams(config)
  step = make_step(model, optimizer=config.optimizer,
                   lbfgs_memory=config.lbfgs_memory, clip=config.clip_pixels)
  evaluate = jax.jit(lambda p, t, x: objective(model, p, t, x))

  image = jnp.asarray(init_image(config, content))
  opt_state = init_state(config.optimizer, config.lbfgs_memory, hparams, image)
  last_time, last_step = time.perf_counter(), 0

  def log(i):
    nonlocal last_time, last_step
    total, parts = jax.device_get(evaluate(params, targets, image))
    now = time.perf_counter()
    metrics = {'step': i, 'loss': float(total),
               **{k: float(v) for k, v in parts.items()},
               'steps_per_s': (i - last_step) / max(now - last_time, 1e-9)}
    last_time, last_step = now, i
    if not math.isfinite(metrics['loss']):
      raise UserError(f'the loss became {metrics["loss"]} by step {i}; the '
                      'learning rate or a loss weight is likely too high')
    if on_log:
      on_log(i, metrics)
    return metrics

  metrics = log(0)
  for i in range(1, config.num_steps + 1):
    image, opt_state, _ = step(params, targets, hparams, image, opt_state)
    if i == 1:  # keep compilation out of the reported speed
      jax.block_until_ready(image)
      last_time, last_step = time.perf_counter(), 1
    if config.log_every and i % config.log_every == 0 or i == config.num_steps:
      metrics = log(i)
    if on_save and config.save_every and i % config.save_every == 0:
      on_save(i, np.array(image))
  return np.array(image), metrics
