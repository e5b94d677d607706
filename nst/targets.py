"""Inputs of a member at a scale -> its targets, and its starting image.

  1. ``load_inputs``: content, style images (at ``style_scale``), masks, and
     the colour preservation's conversions (``nst.colour``);
  2. ``make_targets``: each term of the objective (``losses.TERMS``) makes
     its target from a ``Context`` (content features; style moments,
     blended or one per masked region; ...), computed once, together with
     the terms' weights, into one pytree (``Targets``);
  3. ``init_image``: the content image, white noise, or a given image; at a
     finer scale, the previous scale's output resized (``resize_image``)
     plus the photo's detail the coarser scale lacked (``scale_detail``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nst import colour, images, losses, vgg
from nst.errors import UserError
from nst.spec import (blend_weights, check_content_shape, layer_distance,
                      layer_weights, mask_specs, style_distances, style_specs)


@struct.dataclass
class Targets:
  """What the objective compares a member's image against, and its weights
  (a pytree of arrays; ``nst.step.objective`` reads it).

  ``terms``: term name (``losses.TERMS``) -> its target. The built-in ones:
    content  {'features': layer -> content features (float32),
              'weights': layer -> weight x scale (0 = unused layer)}
    style    {'targets': layer -> style target (``losses.style_target``),
              'weights': layer -> weight (0 = unused layer),
              'masks': layer -> (S, h, w) masks, or None,
              'region_weights': (S,) blend x non-empty, or None}
    tv       {'scale': the TV's scale factor}
  ``weights``: term name -> its weight (alpha, beta, tv_weight).
  ``range_scale``: what L-BFGS's range penalty is multiplied by
  (``losses.range_scale``).
  """
  terms: dict
  weights: dict
  range_scale: jnp.ndarray


@functools.partial(jax.jit, static_argnums=(0, 3))
def features(model, params, image, layers):
  """Features of one (H, W, 3) image, without the batch axis."""
  return {k: v[0] for k, v in model.apply(params, image[None], layers).items()}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _moments(model, params, image, layers, trims=()):
  """{layer: (mean, second raw moment)} of one image's features; at the
  layers of ``trims`` ((layer, trim) pairs), of its typical positions only
  (``losses.typical_mask``)."""
  trims = dict(trims)
  return {l: losses.moments(f, losses.typical_mask(f, trims[l])
                            if trims.get(l, 0) > 0 else None)
          for l, f in features(model, params, image, layers).items()}


def forward_params(params):
  """The plain parameters of prepared ``params`` (``prepare_params``): for
  forward passes that are run once or now and then (targets, logged
  losses), whose compilation would cost more with the step's extra kernels
  than those kernels save."""
  return {'params': params['params']}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _content_targets(model, params, image, weights, scaling):
  """Content features (float32) at the layers of ``weights``, each layer's
  weight times its scale (``losses.content_scale``), and the TV and range
  penalty scales."""
  feats = {k: v.astype(jnp.float32) for k, v in features(
      model, params, image, tuple(weights)).items()} if weights else {}
  scaled = {l: w * losses.content_scale(feats[l], scaling)
            for l, w in weights.items()}
  blank = sum(w * losses.layer_content_loss(jnp.zeros_like(feats[l]),
                                            feats[l])
              for l, w in scaled.items())
  return (feats, scaled, losses.tv_scale(image, scaling),
          losses.range_scale(image, blank))


@functools.partial(jax.jit,
                   static_argnames=('masked', 'distances', 'scaling'))
def _style_targets(per_style, blend, *, masked, distances, scaling):
  """{layer: style target} from each style image's moments: their blend
  (weights normalised to sum 1), or with ``masked`` one target per style
  image, stacked on a leading axis (one per mask region); each layer's
  distance from ``distances`` (``spec.style_distances``)."""
  kind = functools.partial(layer_distance, distances)
  if masked:
    return {l: jax.tree.map(lambda *xs: jnp.stack(xs), *[
        losses.style_target(*m[l], kind(l), scaling) for m in per_style])
            for l in per_style[0]}
  mix = lambda *xs: sum(w * x for w, x in zip(blend, xs)) / blend.sum()
  return {l: losses.style_target(
      *jax.tree.map(mix, *[m[l] for m in per_style]), kind(l), scaling)
          for l in per_style[0]}


@dataclasses.dataclass
class Inputs:
  """The images of one run at one scale, in the Caffe convention."""
  content: np.ndarray        # what the network sees as the content
  styles: list[np.ndarray]   # what it sees as each style
  masks: np.ndarray | None   # (S, H, W) on 0-1 at the content's size
  original: np.ndarray       # the content photo, in colour


def image_options(config) -> dict[str, Any]:
  """How the config has image files read (``images.read_rgb``'s options)."""
  return {'max_pixels': config.max_image_pixels,
          'background': tuple(config.alpha_background)}


def image_loader(config) -> Callable[[str, int], np.ndarray]:
  """``images.load`` with the config's ``image_options``."""
  return functools.partial(images.load, **image_options(config))


def load_inputs(config, size: int, load: Callable | None = None) -> Inputs:
  """Reads (``load(spec, size)``; default ``image_loader(config)``) and
  prepares the images at ``size``: each style at ``style_scale * size``,
  masks at the content's shape, then the colour preservation's
  conversions."""
  load = load or image_loader(config)
  original = load(config.content_image, size)
  check_content_shape(config, original.shape, size)
  style_size = max(1, round(config.style_scale * size))
  styles = [load(spec, style_size) for spec in style_specs(config)]
  needed = vgg.min_size(tuple(config.style_layers))
  for spec, style in zip(style_specs(config), styles):
    if min(style.shape[:2]) < needed:
      raise UserError(
          f'style image {spec!r} at style_scale={config.style_scale} and '
          f'size {size} is {style.shape[1]}x{style.shape[0]} px; the style '
          f'layers need a shorter side of at least {needed} px: raise '
          'style_scale or image_size')
  h, w = original.shape[:2]
  masks = (np.stack([images.read_mask(spec, h, w, **image_options(config))
                     for spec in mask_specs(config)])
           if mask_specs(config) else None)
  content, styles = colour.prepare(config.preserve_colour, original, styles)
  return Inputs(content, styles, masks, original)


def _pool_to(mask: np.ndarray, shape) -> np.ndarray:
  """(S, H, W) masks 2x2-average-pooled (stride 2, rounding down, as the
  network's pooling) until they have a layer's (h, w)."""
  while mask.shape[1:] != tuple(shape):
    h, w = mask.shape[1] // 2, mask.shape[2] // 2
    if h < shape[0] or w < shape[1]:
      raise ValueError(f'a mask of {mask.shape[1:]} cannot pool to {shape}')
    mask = mask[:, :2 * h, :2 * w].reshape(-1, h, 2, w, 2).mean((2, 4))
  return mask


def _layer_masks(masks, shapes) -> dict[str, jnp.ndarray]:
  """(S, H, W) masks at each layer's resolution (``_pool_to``)."""
  masks = np.asarray(masks, np.float32)
  return {l: jnp.asarray(_pool_to(masks, s.shape[:2]))
          for l, s in shapes.items()}


def make_targets(config, model, params, inputs: Inputs, *,
                 content_layers=None, style_layers=None,
                 area_ratio: float = 1.0) -> Targets:
  """Everything the objective compares against, and its weights.

  Returns a pytree of arrays: each term's target (``losses.TERMS``; made
  from a ``Context``) and its weight. Computed once, outside the step.
  ``content_layers`` / ``style_layers`` (default: the config's) may
  name more layers than the config uses: those get weight 0, so configs with
  different layer sets share one pytree structure (and one compiled step).

  Several style images blend: their moments, weighted by
  ``style_blend_weights`` (normalised to sum 1), make one target. With
  masks, each style is its own region's target, weighted by its blend weight
  (not normalised; 0 for an empty mask).

  ``config.loss_scaling`` (``losses.SCALINGS``) sets each layer's scale
  factor: with ``relative`` every term is a relative error, the same at any
  size; with ``paper`` the content loss grows with the pixel count and the
  style loss does not, so ``area_ratio`` multiplies alpha there: a coarse
  scale of a multi-scale run passes (final area / its area) to keep
  alpha/beta's balance.
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
  context = Context(config, model, forward_params(params), inputs,
                    content_w, style_w)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  paper = config.loss_scaling == 'paper'
  return Targets(
      terms={name: term.target(config, context)
             for name, term in losses.TERMS.items()},
      weights={name: f32(config[term.weight] * (
          area_ratio if paper and term.area else 1.0))
               for name, term in losses.TERMS.items()},
      range_scale=context.range_scale())


class Context:
  """What a term's target is made from (``losses.Term.target``): the
  member's images at this scale (``inputs``), its config, and the network
  (``features``). The built-in terms' targets are made here, each once.

  Forward passes only: XLA's own convolutions (``forward_params``), which
  compile in a fraction of the time of the step's kernels (the same values
  up to rounding)."""

  def __init__(self, config, model, params, inputs: Inputs,
               content_weights: dict, style_weights: dict):
    self.config, self.model, self.params, self.inputs = (
        config, model, params, inputs)
    self.content_weights, self.style_weights = content_weights, style_weights

  def features(self, image, layers) -> dict:
    """Features of one (H, W, 3) image (Caffe convention) at ``layers``."""
    return features(self.model, self.params, jnp.asarray(image),
                    tuple(layers))

  @functools.cached_property
  def _content(self):
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return _content_targets(
        self.model, self.params, jnp.asarray(self.inputs.content),
        jax.tree.map(f32, self.content_weights), self.config.loss_scaling)

  def content_target(self) -> dict:
    feats, weights, _, _ = self._content
    return {'features': feats, 'weights': weights}

  def tv_scale(self) -> jnp.ndarray:
    return self._content[2]

  def range_scale(self) -> jnp.ndarray:
    return self._content[3]

  def style_target(self) -> dict:
    config, style_w = self.config, self.style_weights
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    trims = tuple(zip(config.style_layers,
                      map(float, config.style_layer_trims)))
    per_style = [_moments(self.model, self.params, jnp.asarray(s),
                          tuple(style_w), trims)
                 for s in self.inputs.styles] if style_w else []
    blend = blend_weights(config)
    masks = self.inputs.masks
    out = {'targets': _style_targets(
        per_style, blend, masked=masks is not None,
        distances=style_distances(config), scaling=config.loss_scaling)
           if style_w else {},
           'weights': jax.tree.map(f32, style_w), 'masks': None,
           'region_weights': None}
    if masks is None:
      return out
    content = jnp.asarray(self.inputs.content)
    shapes = jax.eval_shape(lambda x: features(
        self.model, self.params, x, tuple(style_w)), content)
    nonempty = (masks.reshape(len(blend), -1).max(axis=1) > 0)
    return {**out, 'masks': _layer_masks(masks, shapes),
            'region_weights': f32(blend * nonempty)}


def init_image(config, content: np.ndarray) -> np.ndarray:
  """The starting image: content (default), seeded white noise, or a file."""
  if config.init == 'content':
    return np.asarray(content, np.float32)
  if config.init == 'noise':
    key = jax.random.key(config.seed)
    return np.asarray(jax.random.normal(key, content.shape) *
                      config.init_noise_std, np.float32)
  h, w = content.shape[:2]
  return images.preprocess(images.resize_to(
      images.read_rgb(config.init, **image_options(config)), h, w))


def resize_image(image, shape) -> np.ndarray:
  """A (finished scale's) image resized to ``shape`` (H, W, 3), bicubic."""
  if tuple(image.shape) == tuple(shape):
    return np.asarray(image, np.float32)
  return np.asarray(jax.image.resize(jnp.asarray(image), tuple(shape),
                                     'cubic'), np.float32)


def scale_detail(config, content: np.ndarray,
                 coarse_content: np.ndarray) -> np.ndarray:
  """What a finer scale adds to the coarser scale's output, resized, to
  start from: with ``init='content'``, the photo's detail that the coarser
  scale could not hold (the content image minus its coarser copy, resized
  to it), so that fine scales refine the photo's edges instead of
  rebuilding them from a blurred start; otherwise nothing."""
  if config.init != 'content':
    return np.zeros_like(content)
  return content - resize_image(coarse_content, content.shape)


