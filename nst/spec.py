"""A config, checked once and resolved into what the engine runs.

``check(config)`` raises a ``UserError`` for every value that cannot run,
before any image is read or anything compiled. ``resolve`` then reads the
content image at each scale and returns a ``Member``: its config (the
source of its per-member values: images, weights, alpha/beta, learning
rate...) and its ``Program``, the frozen, hashable record of everything
static -- network, optimiser, scale plan and image shapes, log/save/
checkpoint periods. The step is compiled from a ``Program`` alone
(``nst.step.make_update``, jitted by ``nst.engine.compiled`` for its
``update`` part), members are grouped by ``Program`` equality
(``nst.sweep.group``), and the engine's loop reads only the ``Program``: a
setting that changes the compiled code cannot differ within a group unseen.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from nst import colour, images, losses, optim, vgg
from nst.errors import UserError

INITS = ('content', 'noise')
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a weight above: inf
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Update:
  """What the update step is compiled from: the network and the optimiser
  (``nst.engine.compiled`` is cached by it, so programs that differ only in
  their plan or periods share one jitted step)."""
  network: str
  pooling: str
  compute_dtype: str
  remat: bool
  convolution: str
  optimizer: str
  lbfgs_memory: int
  clip_pixels: bool

  @property
  def dtype(self):
    return COMPUTE_DTYPES[self.compute_dtype]


@dataclasses.dataclass(frozen=True)
class Program:
  """Everything a group of members shares: what the step is compiled from
  and what the loop does at which step."""
  network: str
  pooling: str
  compute_dtype: str
  remat: bool
  convolution: str
  weights: str
  optimizer: str
  lbfgs_memory: int
  clip_pixels: bool
  style_loss: tuple  # ``style_distances``: (default, ((layer, other), ...))
  regions: int                  # masked style regions; 0 = no masks
  plan: tuple[tuple[tuple[int, int, int], int], ...]  # (shape, steps)
  log_every: int
  save_every: int
  checkpoint_every: int

  @property
  def total_steps(self) -> int:
    return sum(n for _, n in self.plan)

  @property
  def update(self) -> Update:
    return Update(**{f.name: getattr(self, f.name)
                     for f in dataclasses.fields(Update)})

  @property
  def dtype(self):
    return COMPUTE_DTYPES[self.compute_dtype]


class Settings(Mapping):
  """A member's config values, checked and frozen: read by attribute or by
  key, each sequence a tuple, nothing settable. What the engine, the
  targets and the terms (``losses.Term.target``) read of a member, so no
  value can change between the check and the run's last step; a field a
  new term adds to the config is here without naming it anywhere."""

  __slots__ = ('_values',)

  def __init__(self, config):
    values = {k: _frozen(v) for k, v in config.items()
              if not hasattr(v, 'items')}  # (a sweep's own block)
    object.__setattr__(self, '_values', values)

  def __getattr__(self, name):
    if name.startswith('_'):  # (copy and pickle ask before __init__ ran)
      raise AttributeError(name)
    try:
      return self._values[name]
    except KeyError:
      raise AttributeError(name) from None

  def __reduce__(self):
    return Settings, (dict(self._values),)

  def __setattr__(self, name, value):
    raise AttributeError(f'{name}: a member\'s settings are frozen; change '
                         'the config before it is resolved')

  def __getitem__(self, name):
    return self._values[name]

  def __iter__(self):
    return iter(self._values)

  def __len__(self):
    return len(self._values)

  def __repr__(self):
    return f'Settings({self._values!r})'


def _frozen(value):
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


@dataclasses.dataclass
class Member:
  """One run, resolved: its checked, frozen ``settings``, its ``program``,
  the optimiser's numeric settings (``hparams``), the longest side its
  network is given (``largest_side``), and where it sits in a sweep
  (``coords``: axis -> position; ``values``: axis -> value; empty for a
  single run). ``config`` is the ConfigDict it came from, for what writes
  it out (config.json, a resumed run's fingerprints); the engine reads the
  rest."""
  index: int
  config: Any  # ml_collections.ConfigDict
  program: Program
  coords: dict[str, int] = dataclasses.field(default_factory=dict)
  values: dict[str, Any] = dataclasses.field(default_factory=dict)
  settings: Settings = dataclasses.field(init=False)
  hparams: Any = dataclasses.field(init=False)  # optim.Hparams, host
  largest_side: int = dataclasses.field(init=False)  # ``largest_side``

  def __post_init__(self):
    self.settings = Settings(self.config)
    self.hparams = optim.hyperparams(self.settings)
    self.largest_side = largest_side(self.settings)


def resolve(config, load: Callable[[str, int], np.ndarray], index: int = 0,
            coords=None, values=None) -> Member:
  """Checks ``config`` and reads its content image at each scale (``load
  (spec, size)``, e.g. ``nst.targets.image_loader(config)``) into a
  ``Member``."""
  check(config)
  plan, needed = [], min_image_side(config)
  explicit = [int(s) for s in config.scales if s >= 1]
  sizes = scale_plan(config)
  for k, (size, steps) in enumerate(sizes):
    content = load(config.content_image, size)
    if min(content.shape[:2]) < needed and k < len(sizes) - 1 and (
        size not in explicit):
      continue  # a fraction of a wide image, too small: left out
    check_content_shape(config, content.shape, size)
    plan.append((tuple(content.shape), steps))
  program = Program(**shared(config), plan=tuple(plan))
  return Member(index, config, program, dict(coords or {}),
                dict(values or {}))


def shared(config) -> dict[str, Any]:
  """Every field of ``Program`` but its plan, from ``config``: what a member
  must share with the others of its group (the plan's shapes come from the
  content image too). ``resolve`` and ``nst.memory``'s grouping both read
  it."""
  plain = {f.name: getattr(config, f.name)
           for f in dataclasses.fields(Program)
           if f.name not in ('style_loss', 'regions', 'plan')}
  return {**plain, 'clip_pixels': bool(config.clip_pixels),
          'style_loss': style_distances(config), 'regions': regions(config)}


def largest_side(config) -> int:
  """The longest side (px) of any image the network is given in a run of
  ``config``: the content at ``image_size`` or a style at ``style_scale``
  times it (coarser scales are smaller)."""
  return max(config.image_size,
             max(1, round(config.style_scale * config.image_size)))


def layer_weights(layers, weights, default) -> dict[str, float]:
  """{layer: weight}; an empty ``weights`` gives every layer ``default``."""
  weights = tuple(weights) or (default,) * len(layers)
  return dict(zip(layers, map(float, weights)))


def style_distances(config) -> tuple[str, tuple[tuple[str, str], ...]]:
  """Each style layer's distance (``losses.STYLE_DISTANCES``): ``style_loss``,
  and the ``(layer, distance)`` pairs of ``style_layer_losses`` that differ
  from it. A layer named in neither (one that another member of a sweep
  uses) has ``style_loss``'s, so configs that differ only in their layer
  sets share one program."""
  default = config.style_loss
  per_layer = tuple(config.style_layer_losses)
  return default, tuple((l, k) for l, k in zip(config.style_layers,
                                                per_layer) if k != default)


def layer_distance(distances, layer: str) -> str:
  """The distance of ``layer`` under ``style_distances``' result."""
  default, others = distances
  return dict(others).get(layer, default)


def min_image_side(config) -> int:
  """Smallest image side (px) at which every requested layer is non-empty."""
  return vgg.min_size(tuple(config.content_layers) +
                      tuple(config.style_layers))


def style_specs(config) -> list[str]:
  """The style image sources: ``style_image`` split at commas (a file
  whose own name has a comma is refused, saying so)."""
  specs = [s.strip() for s in config.style_image.split(',')]
  whole = Path(config.style_image).expanduser()
  if len(specs) > 1 and whole.is_file() and not all(
      images.is_builtin(s) or Path(s).expanduser().exists() for s in specs):
    raise UserError(f'style_image {config.style_image!r} is one file whose '
                    'name has a comma, and commas separate style images: '
                    'rename or link it without the comma')
  return specs


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

  A scale below 1 is a fraction of ``image_size`` (rounded to whole px).
  One that comes out below ``min_scale_size`` is not run: its steps are
  run at the next size instead (so the run's steps stay the same). One
  smaller than the layers need (``min_image_side``; only where
  ``min_scale_size`` is below that) is left out with its steps, so one
  config serves small and large outputs (``resolve`` also leaves one out,
  with its steps and any carried into it, whose image is too small on its
  shorter side). A scale given in px is always run.
  """
  plan, carried = [], 0
  for size, n, fate in _coarse_scales(config):
    if fate == 'carry':
      carried += n
    elif fate == 'run':
      plan.append((size, n + carried))
      carried = 0
  return plan + [(config.image_size, config.num_steps + carried)]


def _coarse_scales(config) -> list[tuple[int, int, str]]:
  """(size in px, steps, fate) of each of ``config.scales``, as given;
  fate is 'run', 'carry' (below ``min_scale_size``: its steps run at the
  next size) or 'drop' (below the layers' minimum: left out with its
  steps)."""
  steps = tuple(config.scale_steps) or (config.num_steps,) * len(
      config.scales)
  needed = min_image_side(config)
  out = []
  for scale, n in zip(config.scales, steps):
    if scale >= 1:
      out.append((int(scale), n, 'run'))
      continue
    size = max(1, round(scale * config.image_size))
    out.append((size, n, 'carry' if size < config.min_scale_size else
                'run' if size >= needed else 'drop'))
  return out


def check_content_shape(config, shape, size: int | None = None) -> None:
  """Raises a UserError if the loaded content image is too small."""
  h, w = shape[:2]
  needed = min_image_side(config)
  if min(h, w) < needed:
    final = size in (None, config.image_size)
    where = (f'image_size={config.image_size}' if final else
             f'the coarse scale of {size} px (scales={tuple(config.scales)})')
    # The shorter side grows with the longer one: the size that gives it
    # ``needed`` px (at this scale's fraction of image_size).
    works = math.ceil(config.image_size * needed / min(h, w))
    fix = (f'raise image_size (to {works} or more)' if final else
           f'raise image_size (to {works} or more) or leave out the smaller '
           'scales (scales=() for one scale)')
    raise UserError(f'at {where} the content image is '
                    f'{w}x{h} px; the requested layers need a shorter side of '
                    f'at least {needed} px: {fix}')


def _check_image_options(config) -> None:
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


def check(config) -> None:
  """Raises a UserError for config values that cannot run, or for a
  field the config lacks.

  Called before any image is read or anything compiled.
  """
  try:
    _check(config)
  except (AttributeError, KeyError) as e:
    # ml_collections words a missing field as "'name'" (nested quotes).
    name = str(e.args[0] if e.args else e).strip('"\'')
    if not name.isidentifier() or name in config:
      raise
    raise UserError(f'the config has no field {name!r}: a config file '
                    "starts from configs/default.py's get_config() and "
                    'changes the fields it needs') from None


def _check(config) -> None:
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
    _check_per_layer(config, kind)
    for w in weights:
      if not (math.isfinite(w) and 0 <= w <= FLOAT32_MAX):
        raise UserError(f'{kind}_layer_weights {weights}: each must be a '
                        f'finite number >= 0 and at most {FLOAT32_MAX:.3g} '
                        '(float32)')
  for field in (*(t.weight for t in losses.TERMS.values()),
                'learning_rate', 'init_noise_std'):
    value = config[field]
    if not (math.isfinite(value) and 0 <= value <= FLOAT32_MAX):
      raise UserError(f'{field}={value!r}: accepted is a finite number >= 0 '
                      f'and at most {FLOAT32_MAX:.3g} (float32)')
  if config.image_size < min_image_side(config):
    raise UserError(f'image_size={config.image_size} is too small for the '
                    f'requested layers; accepted: >= {min_image_side(config)}')
  if not (math.isfinite(config.lr_decay_rate) and config.lr_decay_rate > 0):
    raise UserError(f'lr_decay_rate={config.lr_decay_rate!r}: accepted is a '
                    'finite number > 0')
  _check_image_options(config)
  for field, least in (('num_steps', 0), ('lr_decay_steps', 1),
                       ('lbfgs_memory', 1), ('log_every', 0),
                       ('save_every', 0), ('checkpoint_every', 0)):
    if config[field] < least:
      raise UserError(f'{field}={config[field]}: accepted is >= {least}')
  if not (isinstance(config.seed, int) and -2**63 <= config.seed < 2**63):
    raise UserError(f'seed={config.seed!r}: accepted is a whole number from '
                    f'{-2**63} to {2**63 - 1} (64 bits)')
  _check_controls(config)
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


# The fields that give one value per layer of a layer list.
PER_LAYER = {'content': ('content_layer_weights',),
             'style': ('style_layer_weights', 'style_layer_losses',
                       'style_layer_trims')}


def _check_per_layer(config, kind: str) -> None:
  """One UserError naming every per-layer field of ``kind`` whose length
  is not the layer list's (a changed layer list often leaves several)."""
  layers = tuple(config[f'{kind}_layers'])
  wrong = [f'{f} has {len(config[f])}' for f in PER_LAYER[kind]
           if config[f] and len(config[f]) != len(layers)]
  if wrong:
    raise UserError(f'{kind}_layers {layers} names {len(layers)} layer(s) '
                    f'but {" and ".join(wrong)} values; give one per layer, '
                    'or () for the default (equal weights, no trim, '
                    'style_loss)')


def _check_controls(config) -> None:
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
  if config.style_loss not in losses.STYLE_DISTANCES:
    raise UserError(f'style_loss={config.style_loss!r}; accepted: '
                    f'{", ".join(losses.STYLE_DISTANCES)}')
  trims = tuple(config.style_layer_trims)
  if not all(isinstance(t, (int, float)) and not isinstance(t, bool)
             and 0 <= t < 1 for t in trims):
    raise UserError(f'style_layer_trims={trims}: each must be a number in '
                    '[0, 1) (the fraction of positions left out)')
  per_layer = tuple(config.style_layer_losses)
  for kind in per_layer:
    if kind not in losses.STYLE_DISTANCES:
      raise UserError(f'style_layer_losses={per_layer} has {kind!r}; '
                      f'accepted: {", ".join(losses.STYLE_DISTANCES)}')
  if not (math.isfinite(config.avg_decay) and 0 <= config.avg_decay < 1):
    raise UserError(f'avg_decay={config.avg_decay!r}: accepted is a number '
                    'in [0, 1) (0 = no averaging)')
  if isinstance(config.min_scale_size, bool) or not isinstance(
      config.min_scale_size, int) or config.min_scale_size < 0:
    raise UserError(f'min_scale_size={config.min_scale_size!r}: accepted is '
                    'a whole number of px >= 0 (0 = keep every scale)')
  scales, steps = tuple(config.scales), tuple(config.scale_steps)
  needed = min_image_side(config)
  kinds_ok = all(
      not isinstance(s, bool) and (isinstance(s, int) and s >= needed or
                                   isinstance(s, float) and 0 < s < 1)
      for s in scales)
  # Increasing as given: a scale below min_scale_size counts too (its
  # steps run at the next size), one below the layers' minimum does not.
  sizes = [size for size, _, fate in _coarse_scales(config)
           if fate != 'drop'] + [config.image_size] if kinds_ok else []
  if not kinds_ok or sizes != sorted(set(sizes)):
    raise UserError(f'scales={scales}: accepted are increasing sizes below '
                    f'image_size={config.image_size}, each a whole number of '
                    f'px from {needed} (the layers\' minimum) or a fraction '
                    'of image_size between 0 and 1 (e.g. (0.25, 0.5)), or () '
                    'for one scale')
  if steps and scales and (len(steps) != len(scales) or
                any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                    for s in steps)):
    raise UserError(f'scale_steps={steps}: accepted is () (num_steps at '
                    f'each scale) or one integer >= 0 per scale {scales}')
