"""Colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016,
"Preserving Color in Neural Artistic Style Transfer").

``preserve_colour`` in the config (``MODES``):
  ``none``       the output takes the style's colours (the 2015 method);
  ``luminance``  transfer on luminance only: content and style become grey
                 images of their luminance Y (YIQ space), the style's Y
                 shifted and scaled to the content's mean and standard
                 deviation; the network sees Y in all three channels, and
                 the output is the result's Y with the content's chrominance
                 (I, Q) put back (``restore``);
  ``histogram``  colour matching before transfer: each style image's RGB
                 pixels are mapped linearly, x -> A (x - mu_s) + mu_c with
                 A = C_c^1/2 C_s^-1/2, so their mean and covariance equal the
                 content's (the paper's "Image Analogies" variant).

Images are in the library's Caffe convention (``nst.images``); colour spaces
are scikit-image's. Values are not clipped here: the network takes them as
they are, and ``images.save`` clips when writing.
"""
from __future__ import annotations

import numpy as np
import skimage.color

from nst import images
from nst.errors import UserError

MODES = ('none', 'luminance', 'histogram')


def check(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f'preserve_colour={mode!r}; accepted: {", ".join(MODES)}')


def to_rgb(x: np.ndarray) -> np.ndarray:
  """Caffe convention -> RGB float64 on 0-1, unclipped."""
  return (np.asarray(x, np.float64) + images.CAFFE_MEAN_BGR)[..., ::-1] / 255


def from_rgb(rgb: np.ndarray) -> np.ndarray:
  """RGB on 0-1 -> Caffe convention (float32)."""
  return images.preprocess(np.asarray(rgb) * 255)


def yiq(x: np.ndarray) -> np.ndarray:
  """A Caffe-convention image in YIQ (Y on 0-1)."""
  return skimage.color.rgb2yiq(to_rgb(x))


def grey(y: np.ndarray) -> np.ndarray:
  """Luminance (H, W) on 0-1 -> a grey Caffe-convention image."""
  return from_rgb(np.repeat(np.asarray(y)[..., None], 3, axis=-1))


def match_luminance(style_y: np.ndarray, content_y: np.ndarray) -> np.ndarray:
  """``style_y`` shifted and scaled to ``content_y``'s mean and std."""
  scale = content_y.std() / max(style_y.std(), 1e-8)
  return (style_y - style_y.mean()) * scale + content_y.mean()


def _sqrtm(cov: np.ndarray, power: float) -> np.ndarray:
  values, vectors = np.linalg.eigh(cov)
  values = np.maximum(values, 1e-10)
  return (vectors * values ** power) @ vectors.T


def match_colours(style: np.ndarray, content: np.ndarray) -> np.ndarray:
  """``style`` with its RGB mean and covariance made the content's."""
  s = to_rgb(style).reshape(-1, 3)
  c = to_rgb(content).reshape(-1, 3)
  mu_s, mu_c = s.mean(0), c.mean(0)
  a = _sqrtm(np.cov(c, rowvar=False, bias=True), 0.5) @ _sqrtm(
      np.cov(s, rowvar=False, bias=True), -0.5)
  matched = (s - mu_s) @ a.T + mu_c
  return from_rgb(matched.reshape(style.shape))


def prepare(mode: str, content: np.ndarray, styles: list[np.ndarray]
            ) -> tuple[np.ndarray, list[np.ndarray]]:
  """The content and style images the network sees under ``mode``."""
  check(mode)
  if mode == 'none':
    return content, list(styles)
  if mode == 'histogram':
    return content, [match_colours(s, content) for s in styles]
  content_y = yiq(content)[..., 0]
  return grey(content_y), [grey(match_luminance(yiq(s)[..., 0], content_y))
                           for s in styles]


def restore(mode: str, image: np.ndarray, content: np.ndarray) -> np.ndarray:
  """The output image: under ``luminance``, the result's Y with the
  content's I and Q; otherwise ``image`` itself."""
  if mode != 'luminance':
    return image
  out = yiq(content)
  out[..., 0] = yiq(image)[..., 0]
  return from_rgb(skimage.color.yiq2rgb(out))
