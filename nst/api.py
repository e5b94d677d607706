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
import PIL.Image

from nst import backend, engine, images, memory, targets
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


def _rgb(array, background) -> np.ndarray:
  """An image array (or PIL image) as uint8 RGB.

  uint8 spans 0-255 and uint16 0-65535 (16-bit images); any other integer
  type (numpy's default int64, int32, ...) is taken as 0-255 and values
  outside are refused; floats are 0-1 if none exceeds 1, else 0-255. Grey
  is spread to three channels; a fourth channel is alpha, composited on
  ``background`` as for image files. A PIL image is read as a file's
  would be (any mode: palette, grey, 16-bit, CMYK, alpha)."""
  if isinstance(array, PIL.Image.Image):
    return images.pil_rgb(array, tuple(background))
  x = np.asarray(array)
  if x.ndim == 2:
    x = np.stack([x] * 3, axis=-1)
  if x.ndim != 3 or x.shape[-1] not in (3, 4) or min(x.shape[:2]) < 1:
    raise UserError(f'an image array of shape {x.shape}: accepted is '
                    '(H, W), (H, W, 3) or (H, W, 4)')
  if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or
                             np.issubdtype(x.dtype, np.floating)):
    raise UserError(f'an image array of dtype {x.dtype}: accepted are '
                    'integer and float arrays and PIL images')
  if x.dtype in (np.uint8, np.uint16):
    x = x.astype(np.float64) / np.iinfo(x.dtype).max
  elif np.issubdtype(x.dtype, np.integer):
    if x.min() < 0 or x.max() > 255:
      raise UserError(
          f'an image array of dtype {x.dtype} with values {x.min()} to '
          f'{x.max()}: accepted for this type are 0-255 (uint16 for 16-bit '
          'images, floats for 0-1)')
    x = x.astype(np.float64) / 255.0
  else:
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
      raise UserError('an image array holds non-finite values')
    x = x if x.max() <= 1.0 else x / 255.0
  x = np.clip(x, 0.0, 1.0)
  if x.shape[-1] == 4:
    alpha = x[..., 3:]
    x = x[..., :3] * alpha + np.asarray(background) / 255.0 * (1 - alpha)
  return np.round(x * 255.0).astype(np.uint8)


def transfer(content: Image, style: Image | Sequence[Image], *,
             config=None, params=None, memory_check: bool = True,
             **overrides) -> np.ndarray:
  """The stylised ``content`` as an (H, W, 3) uint8 RGB array.

  ``content``: a path, a bundled sample ('skimage:chelsea') or an image
  array; ``style``: the same, or a list of them (blended; see
  ``style_blend_weights``). ``config``: a ConfigDict or a config file's
  path (default: configs/default.py, the recommended recipe); any other
  keyword overrides that config's field (``image_size=512``,
  ``style_weight=5.0``). ``params``: network weights to use instead of the
  config's. A UserError names any bad value, and refuses a run that needs
  more memory than is available (``nst.memory.check``; ``memory_check=
  False`` skips that).
  """
  backend.setup()  # when this is the process's first use of JAX
  if config is None or isinstance(config, (str, Path)):
    config = load_config(config or DEFAULT_CONFIG)
  else:
    config = type(config)(config.to_dict())  # the caller's stays as it is
  for name, given in (('content_image', 'content'), ('style_image', 'style')):
    if name in overrides:
      raise UserError(f'{name}= and the positional {given} both name the '
                      f'{given} image; pass it once, as {given}')
  for name, value in overrides.items():
    if name not in config:
      raise UserError(f'unknown config field {name!r}')
    try:
      config[name] = value
    except (TypeError, ValueError) as e:
      raise UserError(f'{name}={value!r} does not fit the field: {e}'
                      ) from None
  styles = list(style) if isinstance(style, (list, tuple)) else [style]
  given = {'content': content,
           **{f'style{k}': s for k, s in enumerate(styles)}}
  arrays = {f'array:{name}': _rgb(image, config.alpha_background)
            for name, image in given.items()
            if not isinstance(image, (str, Path))}
  source = lambda name: (str(given[name]) if isinstance(
      given[name], (str, Path)) else f'array:{name}')
  config.content_image = source('content')
  config.style_image = ','.join(source(f'style{k}')
                                for k in range(len(styles)))

  def load(spec, size):
    if spec in arrays:
      return images.preprocess(images.resize(arrays[spec], size))
    return images.load(spec, size, **targets.image_options(config))

  if memory_check:
    memory.check([config], known={s: a.shape[:2] for s, a in arrays.items()})
  image, _ = engine.stylize(config, params=params, load=load,
                            memory_check=False)
  return images.deprocess(image)
