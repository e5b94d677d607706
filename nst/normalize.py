"""The normalised VGG of Gatys, Ecker & Bethge (2015).

The paper used "a normalized version of the 16 convolutional and 5 pooling
layers of the 19-layer VGG network": weights rescaled so that the mean
activation of each filter over images and positions is one. Because ReLU and
both poolings commute with a positive per-channel scale, rescaling changes the
network's function only by that scale at each layer:

  a_l = relu(W_l * a_{l-1} + b_l) with mean m_l (per output channel) over the
  normalising images. Then W'_l[.., c, o] = W_l[.., c, o] * m_{l-1}[c] / m_l[o]
  and b'_l[o] = b_l[o] / m_l[o] give a'_l = a_l / m_l at every layer, whose
  mean is one.

So every m_l is measured once, on the original network, in one forward pass.
The means depend on the pooling used between blocks (the paper's network uses
average pooling, the default here).

A filter that a small normalising set barely activates would be amplified
enormously and then dominate the Gram matrices, so each mean is floored at
``floor`` (default 0.1) times its layer's median; such filters keep a mean
activation below one. ``floor=0`` is the strict rule (filters with a mean
of exactly zero then keep a scale of one). Why 0.1, and what lower floors
give: experiments/fig1, The floor on rare filters.

``normalize`` is a pure function on params; ``scripts/normalize_vgg.py``
writes its result as a params file, and ``weights = 'normalized'`` in a config
selects the pretrained VGG-19 normalised with the defaults below (computed
once and cached by ``nst.weights``).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst import images, vgg

# The colour and grey photographs bundled with scikit-image.
DEFAULT_IMAGES = ('skimage:astronaut', 'skimage:camera', 'skimage:chelsea',
                  'skimage:coffee', 'skimage:rocket')
DEFAULT_SIZE = 224    # each image is centre-cropped to a square of this side
DEFAULT_POOLING = 'avg'
DEFAULT_FLOOR = 0.1  # means below this fraction of the layer median: floored


def square(rgb: np.ndarray, size: int) -> np.ndarray:
  """Centre crop to a square, then resize to ``size`` x ``size``."""
  h, w = rgb.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return images.resize_to(rgb[top:top + side, left:left + side], size, size)


def load_batch(specs: Sequence[str], size: int = DEFAULT_SIZE) -> np.ndarray:
  """The normalising images as one (B, size, size, 3) Caffe-convention batch."""
  return np.stack([images.preprocess(square(images.read_rgb(s), size))
                   for s in specs])


def activation_means(params, batch: np.ndarray, network: str = 'vgg19',
                     pooling: str = DEFAULT_POOLING) -> dict[str, np.ndarray]:
  """``{conv: mean over images and positions of its ReLU output}``."""
  model = vgg.VGG(network=network, pooling=pooling)
  relus = tuple('relu' + c[4:] for c in vgg.conv_names(network))
  feats = jax.jit(model.apply, static_argnums=2)(params, jnp.asarray(batch),
                                                 relus)
  return {'conv' + r[4:]: np.asarray(feats[r].mean(axis=(0, 1, 2)),
                                     np.float64)
          for r in relus}


def scales(means: dict[str, np.ndarray],
           floor: float = DEFAULT_FLOOR) -> dict[str, np.ndarray]:
  """The divisor per channel: the mean, floored at ``floor`` x the median.

  A channel left at zero (all means zero, or ``floor=0``) keeps a scale of 1.
  """
  out = {}
  for name, m in means.items():
    m = np.maximum(m, floor * np.median(m))
    out[name] = np.where(m > 0, m, 1.0)
  return out


def rescale(params, divisors: dict[str, np.ndarray],
            network: str = 'vgg19'):
  """Params whose activation at each conv layer is the original / divisor."""
  out = {}
  prev = np.ones(3)  # the input is not rescaled
  for name in vgg.conv_names(network):
    m = divisors[name]
    p = params['params'][name]
    kernel = np.asarray(p['kernel'], np.float64)
    out[name] = {
        'kernel': (kernel * prev[:, None] / m).astype(np.float32),
        'bias': (np.asarray(p['bias'], np.float64) / m).astype(np.float32)}
    prev = m
  return {'params': out}


def normalize(params, network: str = 'vgg19',
              specs: Sequence[str] = DEFAULT_IMAGES, size: int = DEFAULT_SIZE,
              pooling: str = DEFAULT_POOLING, floor: float = DEFAULT_FLOOR):
  """Returns ``(normalised params, {conv: mean activation before})``."""
  means = activation_means(params, load_batch(specs, size), network, pooling)
  return rescale(params, scales(means, floor), network), means
