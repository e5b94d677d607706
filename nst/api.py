"""A Python API for notebooks and scripts: ``nst.transfer``.

  import nst
  out = nst.transfer('photo.jpg', 'painting.jpg', image_size=384)
  # out: (H, W, 3) uint8 RGB; content and style may be arrays too

Runs one member through ``nst.engine`` exactly as ``python -m nst.run``
would (same config, same result), keeping nothing on disk.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nst import engine, images
from nst.errors import UserError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'default.py'
Image = Any  # a path, 'skimage:NAME', 'nst:swirls', or an (H, W[, 3]) array


def load_config(path: str | Path):
  """``get_config()`` of the config file at ``path``."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f'config file {str(path)!r} does not exist; pass '
                    'config= a config file or an ml_collections.ConfigDict')
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config()


def _rgb(array) -> np.ndarray:
  """An image array as uint8 RGB: uint8 as is, floats taken as 0-255 (or
  0-1 if none exceeds 1), grey spread to three channels."""
  x = np.asarray(array)
  if x.ndim == 2:
    x = np.stack([x] * 3, axis=-1)
  if x.ndim != 3 or x.shape[-1] not in (3, 4) or min(x.shape[:2]) < 1:
    raise UserError(f'an image array of shape {x.shape}: accepted is '
                    '(H, W), (H, W, 3) or (H, W, 4)')
  x = x[..., :3]
  if x.dtype == np.uint8:
    return x
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise UserError('an image array holds non-finite values')
  x = x * 255.0 if x.max() <= 1.0 else x
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def transfer(content: Image, style: Image | Sequence[Image], *,
             config=None, params=None, **overrides) -> np.ndarray:
  """The stylised ``content`` as an (H, W, 3) uint8 RGB array.

  ``content``: a path, a bundled sample ('skimage:chelsea') or an image
  array; ``style``: the same, or a list of them (blended; see
  ``style_blend_weights``). ``config``: a ConfigDict or a config file's
  path (default: configs/default.py, the recommended recipe); any other
  keyword overrides that config's field (``image_size=512``,
  ``style_weight=2.5``). ``params``: network weights to use instead of the
  config's. A UserError names any bad value.
  """
  if config is None or isinstance(config, (str, Path)):
    config = load_config(config or DEFAULT_CONFIG)
  else:
    config = type(config)(config.to_dict())  # the caller's stays as it is
  for name, value in overrides.items():
    if name not in config:
      raise UserError(f'unknown config field {name!r}')
    config[name] = value
  arrays = {}

  def source(image, name):
    if isinstance(image, (str, Path)):
      return str(image)
    arrays[f'array:{name}'] = _rgb(image)
    return f'array:{name}'

  styles = list(style) if isinstance(style, (list, tuple)) else [style]
  config.content_image = source(content, 'content')
  config.style_image = ','.join(source(s, f'style{k}')
                                for k, s in enumerate(styles))

  def load(spec, size):
    if spec in arrays:
      return images.preprocess(images.resize(arrays[spec], size))
    return images.load(spec, size, **{
        'max_pixels': config.max_image_pixels,
        'background': tuple(config.alpha_background)})

  image, _ = engine.stylize(config, params=params, load=load)
  return images.deprocess(image)
