"""Targets -> initial image -> jitted update step -> loop.

The data flow, one way, at each scale of ``scale_plan`` (one scale unless
``scales`` names coarser ones):
  1. ``load_inputs``: content, style images (at ``style_scale``), masks, and
     the colour preservation's conversions (``nst.colour``);
  2. ``make_targets``: content features and style targets (moments, blended
     or one per masked region) are computed once, together with the loss
     weights, into one pytree (``targets``);
  3. ``init_image``: the content image, white noise, or a given image; at a
     finer scale, the previous scale's output resized (``resize_image``);
  4. ``make_update``: one pure ``(params, targets, hparams, image, state) ->
     (image, state, metrics)``, VGG params passed in, the state holding the
     optimiser's and the iterate average's; ``make_step`` jits it with the
     image and state donated (``nst.sweep`` vmaps the same function);
  5. ``stylize``: runs the steps, calling back for logging and saving; the
     output is the iterate average (``output``), colours restored.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst import checkpoint, colour, images, losses, optim, vgg
from nst.errors import Diverged, Stopped, UserError

INITS = ('content', 'noise')
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def largest_side(config) -> int:
  """The longest side (px) of any image the network is given in a run of
  ``config``: the content at ``image_size`` or a style at ``style_scale``
  times it (coarser scales are smaller)."""
  return max(config.image_size,
             max(1, round(config.style_scale * config.image_size)))


def prepare_params(config, params, layers=None, max_side=None):
  """The variables the step runs with (``vgg.prepare``): backward kernels
  and, for the layers ``config.convolution`` selects up to the deepest of
  ``layers`` (default the config's content and style layers), Winograd
  kernels; with 'auto', only for layers large enough to use them at
  ``max_side`` (default ``largest_side(config)``)."""
  if layers is None:
    layers = tuple(config.content_layers) + tuple(config.style_layers)
  return vgg.prepare(params, config.convolution,
                     COMPUTE_DTYPES[config.compute_dtype], layers,
                     max_side=max_side or largest_side(config))


def make_model(config) -> vgg.VGG:
  """The network of ``config``: its architecture, pooling, compute dtype,
  rematerialisation, and where it uses Winograd kernels."""
  return vgg.VGG(network=config.network, pooling=config.pooling,
                 dtype=COMPUTE_DTYPES[config.compute_dtype],
                 remat=bool(config.remat),
                 winograd_min_size=(vgg.AUTO_WINOGRAD_MIN_SIZE
                                    if config.convolution == 'auto' else 0))


def layer_weights(layers, weights, default) -> dict[str, float]:
  """{layer: weight}; an empty ``weights`` gives every layer ``default``."""
  weights = tuple(weights) or (default,) * len(layers)
  return dict(zip(layers, map(float, weights)))


def min_image_side(config) -> int:
  """Smallest image side (px) at which every requested layer is non-empty."""
  return vgg.min_size(tuple(config.content_layers) +
                      tuple(config.style_layers))


def check_content_shape(config, shape, size: int | None = None) -> None:
  """Raises a UserError if the loaded content image is too small."""
  h, w = shape[:2]
  needed = min_image_side(config)
  if min(h, w) < needed:
    final = size in (None, config.image_size)
    where = (f'image_size={config.image_size}' if final else
             f'the coarse scale of {size} px (scales={tuple(config.scales)})')
    fix = ('raise image_size' if final else 'raise image_size or leave '
           'out the smaller scales (scales=() for one scale)')
    raise UserError(f'at {where} the content image is '
                    f'{w}x{h} px; the requested layers need a shorter side of '
                    f'at least {needed} px: {fix}')


def check_image_options(config) -> None:
  limit = config.max_image_pixels
  if isinstance(limit, bool) or not isinstance(limit, int) or limit < 4:
    raise UserError(f'max_image_pixels={limit!r}: accepted is a whole '
                    'number >= 4')
  colour_ = config.alpha_background
  if not (isinstance(colour_, (tuple, list)) and len(colour_) == 3 and all(
      isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
      for v in colour_)):
    raise UserError(f'alpha_background={colour_!r}: accepted is (R, G, B), '
                    'three whole numbers 0-255')


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
  check_image_options(config)
  for field, least in (('num_steps', 0), ('lr_decay_steps', 1),
                       ('lbfgs_memory', 1), ('log_every', 0),
                       ('save_every', 0), ('checkpoint_every', 0)):
    if config[field] < least:
      raise UserError(f'{field}={config[field]}: accepted is >= {least}')
  check_controls(config)
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise UserError(f'compute_dtype={config.compute_dtype!r}; accepted: '
                    f'{", ".join(COMPUTE_DTYPES)}')
  if not isinstance(config.remat, bool):
    raise UserError(f'remat={config.remat!r}; accepted: True or False')
  vgg.check_convolution(config.convolution,
                        COMPUTE_DTYPES[config.compute_dtype])
  if not (config.init in INITS or images.is_builtin(config.init)
          or Path(config.init).expanduser().is_file()):
    raise UserError(f'init={config.init!r}; accepted: content, noise, or the '
                    'path of an existing image')


def check_controls(config) -> None:
  """Raises a UserError for bad style, colour, averaging or scale fields."""
  styles = style_specs(config)
  if not all(styles):
    raise UserError(f'style_image={config.style_image!r} has an empty entry; '
                    'accepted: one image, or several separated by commas')
  blend = tuple(config.style_blend_weights)
  if blend and len(blend) != len(styles):
    raise UserError(f'style_blend_weights has {len(blend)} values for '
                    f'{len(styles)} style images; give one per image, or () '
                    'for equal weights')
  if blend and not (all(math.isfinite(b) and b >= 0 for b in blend)
                    and sum(blend) > 0):
    raise UserError(f'style_blend_weights={blend}: each must be a finite '
                    'number >= 0, and their sum > 0')
  masks = mask_specs(config)
  if masks and (len(masks) != len(styles) or not all(masks)):
    raise UserError(f'style_masks={config.style_masks!r} names {len(masks)} '
                    f'mask(s) for {len(styles)} style image(s); accepted: '
                    '"" (no masks) or one mask image per style, separated by '
                    'commas')
  if masks and not config.style_layers:
    raise UserError(f'style_masks={config.style_masks!r} with no '
                    'style_layers: masks steer the style loss; name style '
                    'layers or set style_masks=""')
  if not (math.isfinite(config.style_scale) and config.style_scale > 0):
    raise UserError(f'style_scale={config.style_scale!r}: accepted is a '
                    'finite number > 0')
  colour.check(config.preserve_colour)
  if config.loss_scaling not in losses.SCALINGS:
    raise UserError(f'loss_scaling={config.loss_scaling!r}; accepted: '
                    f'{", ".join(losses.SCALINGS)}')
  if config.style_loss not in losses.STYLE_LOSSES:
    raise UserError(f'style_loss={config.style_loss!r}; accepted: '
                    f'{", ".join(losses.STYLE_LOSSES)}')
  if not (math.isfinite(config.avg_decay) and 0 <= config.avg_decay < 1):
    raise UserError(f'avg_decay={config.avg_decay!r}: accepted is a number '
                    'in [0, 1) (0 = no averaging)')
  scales, steps = tuple(config.scales), tuple(config.scale_steps)
  needed = min_image_side(config)
  kinds_ok = all(
      not isinstance(s, bool) and (isinstance(s, int) and s >= needed or
                                   isinstance(s, float) and 0 < s < 1)
      for s in scales)
  sizes = [size for size, _ in scale_plan(config)] if kinds_ok else []
  if not kinds_ok or sizes != sorted(set(sizes)):
    raise UserError(f'scales={scales}: accepted are increasing sizes below '
                    f'image_size={config.image_size}, each a whole number of '
                    f'px from {needed} (the layers\' minimum) or a fraction '
                    'of image_size between 0 and 1 (e.g. (0.25, 0.5)), or () '
                    'for one scale')
  if steps and (len(steps) != len(scales) or
                any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                    for s in steps)):
    raise UserError(f'scale_steps={steps}: accepted is () (num_steps at '
                    f'each scale) or one integer >= 0 per scale {scales}')


@functools.partial(jax.jit, static_argnums=(0, 3))
def _features(model, params, image, layers):
  """Features of one (H, W, 3) image, without the batch axis."""
  return {k: v[0] for k, v in model.apply(params, image[None], layers).items()}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _moments(model, params, image, layers):
  """{layer: (mean, second raw moment)} of one image's features."""
  return {l: losses.moments(f)
          for l, f in _features(model, params, image, layers).items()}


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
  feats = {k: v.astype(jnp.float32) for k, v in _features(
      model, params, image, tuple(weights)).items()} if weights else {}
  scaled = {l: w * losses.content_scale(feats[l], scaling)
            for l, w in weights.items()}
  blank = sum(w * losses.layer_content_loss(jnp.zeros_like(feats[l]),
                                            feats[l])
              for l, w in scaled.items())
  return (feats, scaled, losses.tv_scale(image, scaling),
          losses.range_scale(image, blank))


@functools.partial(jax.jit, static_argnames=('masked', 'kind', 'scaling'))
def _style_targets(per_style, blend, *, masked, kind, scaling):
  """{layer: style target} from each style image's moments: their blend
  (weights normalised to sum 1), or with ``masked`` one target per style
  image, stacked on a leading axis (one per mask region)."""
  if masked:
    return {l: jax.tree.map(lambda *xs: jnp.stack(xs), *[
        losses.style_target(*m[l], kind, scaling) for m in per_style])
            for l in per_style[0]}
  mix = lambda *xs: sum(w * x for w, x in zip(blend, xs)) / blend.sum()
  return {l: losses.style_target(
      *jax.tree.map(mix, *[m[l] for m in per_style]), kind, scaling)
          for l in per_style[0]}


def style_specs(config) -> list[str]:
  """The style image sources: ``style_image`` split at commas."""
  return [s.strip() for s in config.style_image.split(',')]


def mask_specs(config) -> list[str]:
  """The mask sources, one per style image; [] without masks."""
  return ([s.strip() for s in config.style_masks.split(',')]
          if config.style_masks.strip() else [])


def blend_weights(config) -> np.ndarray:
  """One weight per style image; () in the config = 1 each."""
  weights = tuple(config.style_blend_weights) or (1.0,) * len(
      style_specs(config))
  return np.asarray(weights, np.float32)


def regions(config) -> int:
  """Masked regions the style loss sums over; 0 = no masks (one target)."""
  return len(mask_specs(config))


def scale_plan(config) -> list[tuple[int, int]]:
  """(size, steps) of each scale, coarse to fine, ending at image_size.

  A scale below 1 is a fraction of ``image_size`` (rounded to whole px);
  one that comes out smaller than the layers need (``min_image_side``) is
  left out with its steps, so one config serves small and large outputs.
  """
  steps = tuple(config.scale_steps) or (config.num_steps,) * len(
      config.scales)
  needed = min_image_side(config)
  plan = []
  for scale, n in zip(config.scales, steps):
    size = (max(1, round(scale * config.image_size)) if scale < 1 else
            int(scale))
    if size >= needed or scale >= 1:
      plan.append((size, n))
  return plan + [(config.image_size, config.num_steps)]


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
                 area_ratio: float = 1.0) -> dict[str, Any]:
  """Everything the objective compares against, and its weights.

  Returns a pytree of arrays: content features, style targets, the
  per-layer weights and alpha, beta, tv_weight. Computed once, outside the
  step. ``content_layers`` / ``style_layers`` (default: the config's) may
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
  content = jnp.asarray(inputs.content)
  scaling = config.loss_scaling
  # Forward passes only: XLA's own convolutions, which compile in a fraction
  # of the time of the step's kernels (the same values up to rounding).
  params = forward_params(params)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  content_feats, content_weights, tv_scale, range_scale = _content_targets(
      model, params, content, jax.tree.map(f32, content_w), scaling)
  per_style = [_moments(model, params, jnp.asarray(s), tuple(style_w))
               for s in inputs.styles] if style_w else []
  blend = blend_weights(config)
  targets = {
      'content': content_feats,
      'content_weights': content_weights,
      'style_weights': jax.tree.map(f32, style_w),
      'alpha': f32(config.content_weight *
                   (area_ratio if scaling == 'paper' else 1.0)),
      'beta': f32(config.style_weight),
      'tv_weight': f32(config.tv_weight),
      'tv_scale': tv_scale,
      'range_scale': range_scale,
  }
  targets['style'] = _style_targets(
      per_style, blend, masked=inputs.masks is not None,
      kind=config.style_loss, scaling=scaling) if style_w else {}
  if inputs.masks is None:
    return targets
  shapes = jax.eval_shape(lambda x: _features(model, params, x,
                                              tuple(style_w)), content)
  targets['style_masks'] = _layer_masks(inputs.masks, shapes)
  nonempty = (inputs.masks.reshape(len(blend), -1).max(axis=1) > 0)
  targets['region_weights'] = f32(blend * nonempty)
  return targets


def objective(model, params, targets, image):
  """Total loss of one image and its parts (content, style, tv)."""
  layers = tuple(targets['content']) + tuple(
      l for l in targets['style'] if l not in targets['content'])
  feats = _features(model, params, image, layers)
  return losses.total_loss(
      feats=feats, image=image, content_targets=targets['content'],
      style_targets=targets['style'],
      content_weights=targets['content_weights'],
      style_weights=targets['style_weights'], alpha=targets['alpha'],
      beta=targets['beta'], tv_weight=targets['tv_weight'],
      tv_scale=targets['tv_scale'], style_masks=targets.get('style_masks'),
      region_weights=targets.get('region_weights'))


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


def make_update(model, *, optimizer: str, lbfgs_memory: int,
                clip: bool) -> Callable:
  """One optimisation step of one image, as a pure function.

  ``update(params, targets, hparams, image, state) -> (image, state,
  metrics)``, ``metrics['loss']`` being the total loss of the image that went
  in (with L-BFGS and ``clip``, plus the range penalty), ``state`` the optimiser's and the iterate average's (``init_state``).
  ``hparams`` are the optimiser's array settings (``optim.hyperparams``),
  so the same function serves every member of a sweep under ``vmap``.

  ``clip`` keeps the image within valid pixel values: Adam's by projecting
  it after each step; L-BFGS's by adding ``losses.range_penalty`` (times
  ``targets['range_scale']``) to the objective it minimises, since a line
  search needs the objective smooth and its cached value current. Without
  it, L-BFGS drifts out of range and the clipping of the written image
  undoes much of the style (at 512 px, the clipped output's style loss was
  7x the optimiser's).
  """
  linesearch = optim.uses_linesearch(optimizer)
  lo, hi = images.pixel_bounds()

  def update(params, targets, hparams, image, state):
    opt = optim.make(optimizer, hparams, lbfgs_memory=lbfgs_memory,
                     size=image.size)
    opt_state = state['opt']
    value_fn = lambda x: objective(model, params, targets, x)[0]
    if clip and linesearch:
      penalised = value_fn
      value_fn = lambda x: penalised(x) + targets['range_scale'] * (
          losses.range_penalty(x, lo, hi))
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
    average = optim.average_update(state['average'], image,
                                   hparams['avg_decay'])
    return image, {'opt': opt_state, 'average': average}, {'loss': value}

  return update


def init_state(optimizer: str, lbfgs_memory: int, hparams, image):
  """The optimiser state and iterate average for ``image``; each leaf owns
  its buffer.

  (L-BFGS's init shares one buffer between leaves; donation needs each leaf
  to own its own. Its init also has weakly typed scalars where its update
  returns strong ones: copied with their dtype made explicit, the step's
  input and output types agree and it compiles once, not twice.)
  """
  opt = optim.make(optimizer, hparams, lbfgs_memory=lbfgs_memory,
                   size=image.size)
  return jax.tree.map(lambda v: jnp.array(v, dtype=v.dtype, copy=True),
                      {'opt': opt.init(image),
                       'average': optim.average_init(image)})


def output(hparams, image, state):
  """The run's output after the steps so far: the iterate average."""
  return optim.averaged(state['average'], hparams['avg_decay'], image)


@functools.cache
def make_step(model, *, optimizer: str, lbfgs_memory: int = 10,
              clip: bool = False) -> Callable:
  """``make_update``, jitted, with ``image`` and ``state`` donated.

  Cached: runs with the same settings share one jitted function, so a second
  run at the same shapes compiles nothing."""
  update = make_update(model, optimizer=optimizer, lbfgs_memory=lbfgs_memory,
                       clip=clip)
  return jax.jit(update, donate_argnums=(3, 4))


@functools.cache
def _evaluator(model) -> Callable:
  """``(params, targets, hparams, image, state) -> objective(output)``."""
  return jax.jit(lambda p, t, hp, x, s: objective(model, p, t,
                                                  output(hp, x, s)))


_finish = jax.jit(output)


def stylize(config, params, *, load: Callable | None = None,
            on_log: Callable[[int, dict], None] | None = None,
            on_save: Callable[[int, np.ndarray], None] | None = None,
            on_checkpoint: Callable[[int, np.ndarray, Any], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            resume: checkpoint.Checkpoint | None = None):
  """Runs the optimisation; returns the output image and its losses.

  Images are read with ``load(spec, size)`` (Caffe convention; default
  ``image_loader(config)``). Steps are counted across scales. ``on_log``
  gets ``(step, metrics)`` every ``config.log_every`` steps and at the end
  of each scale, with the losses of the output after that many updates;
  ``on_save`` gets ``(step, output)`` every ``config.save_every`` steps (at
  that scale's size); ``on_checkpoint`` gets ``(step, image, state)`` (host
  arrays) every ``config.checkpoint_every`` steps and before ``Stopped`` is
  raised, if they and the output's loss are finite.

  ``should_stop()`` is asked after every step; when it says yes, the run
  checkpoints and raises ``Stopped`` with the output so far. ``resume``
  (a checkpoint of this config) continues from its step: the steps after
  it are the same computation as in a run that was never stopped.

  A non-finite loss at a log step raises ``Diverged``, which carries the
  output of the latest log step whose loss was finite.
  """
  check_config(config)
  model = make_model(config)
  # On the device once: host (NumPy) params would be copied to an
  # accelerator at every step (on a GPU, most of a step's time).
  params = jax.device_put(prepare_params(config, params))
  hparams = optim.hyperparams(config)
  step = make_step(model, optimizer=config.optimizer,
                   lbfgs_memory=config.lbfgs_memory, clip=config.clip_pixels)
  evaluate = _evaluator(model)
  done, image, state, metrics = 0, None, None, {}
  last_finite = None  # (step, output) at the latest finite log step
  start = resume.done if resume else 0

  def result():
    return colour.restore(config.preserve_colour, np.array(
        _finish(hparams, image, state)), inputs.original)

  def save_checkpoint(i):
    """Hands the image and state to ``on_checkpoint`` unless the loss or
    any of them is non-finite (then the last checkpoint stays)."""
    if not on_checkpoint:
      return
    # A log at this step has already checked the loss (it raises if not
    # finite); otherwise evaluate it.
    loss = (np.float32(0) if metrics.get('step') == i else
            evaluate(forward_params(params), targets, hparams, image,
                     state)[0])
    loss, host_image, host_state = jax.device_get((loss, image, state))
    if all(np.isfinite(v).all() for v in jax.tree.leaves(
        (loss, host_image, host_state)) if np.issubdtype(v.dtype, np.floating)):
      on_checkpoint(i, host_image, host_state)

  for size, steps in scale_plan(config):
    if done + steps < start:  # this scale was finished before the checkpoint
      done += steps
      continue
    inputs = load_inputs(config, size, load)
    targets = make_targets(config, model, params, inputs,
                           area_ratio=(config.image_size / size) ** 2)
    first = done
    if done < start:  # the checkpoint's step is in this scale
      image = jnp.asarray(resume.image)
      if image.shape != inputs.content.shape:
        raise UserError(f'the checkpoint holds a {image.shape[1]}x'
                        f'{image.shape[0]} image at step {start}; this run '
                        f'is {inputs.content.shape[1]}x'
                        f'{inputs.content.shape[0]} there')
      state = jax.tree.map(jnp.asarray, checkpoint.fit_state(
          resume, jax.eval_shape(functools.partial(
              init_state, config.optimizer, config.lbfgs_memory), hparams,
                                 image)))
      first = start
    else:
      image = jnp.asarray(
          init_image(config, inputs.content) if image is None else
          resize_image(_finish(hparams, image, state), inputs.content.shape)
          + scale_detail(config, inputs.content, coarse_content))
      state = init_state(config.optimizer, config.lbfgs_memory, hparams,
                         image)
    coarse_content = inputs.content
    last_time, last_step = time.perf_counter(), first

    def log(i):
      nonlocal last_time, last_step, last_finite
      total, parts = jax.device_get(evaluate(forward_params(params),
                                             targets, hparams, image,
                                             state))
      now = time.perf_counter()
      metrics = {'step': i, 'size': size, 'loss': float(total),
                 **{k: float(v) for k, v in parts.items()},
                 'steps_per_s': (i - last_step) / max(now - last_time, 1e-9)}
      last_time, last_step = now, i
      if not math.isfinite(metrics['loss']):
        raise Diverged(
            f'the loss became {metrics["loss"]} by step {i} (last finite: '
            + (f'step {last_finite[0]}' if last_finite else 'none')
            + '); the learning rate or a loss weight is likely too high',
            i, last_finite)
      last_finite = (i, result())
      if on_log:
        on_log(i, metrics)
      return metrics

    if first == 0:
      metrics = log(0)
    for i in range(first + 1, done + steps + 1):
      image, state, _ = step(params, targets, hparams, image, state)
      if i == first + 1:  # keep compilation out of the reported speed
        jax.block_until_ready(image)
        last_time, last_step = time.perf_counter(), i
      if config.log_every and i % config.log_every == 0 or i == done + steps:
        metrics = log(i)
      if on_save and config.save_every and i % config.save_every == 0:
        on_save(i, result())
      if config.checkpoint_every and i % config.checkpoint_every == 0:
        save_checkpoint(i)
      if should_stop and should_stop():
        save_checkpoint(i)
        raise Stopped(i, result())
    done += steps
  return result(), metrics
