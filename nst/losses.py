"""Pure loss functions: Gatys, Ecker & Bethge (2015) and the style losses
and spatial control of Gatys et al. (2017).

Notation of the paper: a layer ``l`` has ``N_l`` filters, each a feature map
of ``M_l`` = height x width positions; ``F^l`` is the (M_l, N_l) matrix of the
generated image's activations, ``P^l`` the content image's, ``G^l = F^T F`` the
Gram matrix of the generated image and ``A^l`` the style image's.

  content:  L_content = sum_l w_l * 1/2 * sum_ij (F_ij - P_ij)^2
  style:    E_l = 1 / (4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2
            L_style = sum_l w_l * E_l
  total:    alpha * L_content + beta * L_style + tv_weight * L_tv

Style statistics are *moments*: the mean ``mu = F^T 1 / M`` (N,) and the
second raw moment ``S = F^T F / M`` (N, N), the Gram matrix per position.
Written with them, ``E_l = 1/(4 N^2) sum_ij (S_ij - S^A_ij)^2``: the paper's
formula when both images have M positions, and still meaningful when the
style image has another size (a style scale, another aspect ratio). Moments,
unlike covariances, blend linearly: the moments of several style images
weighted w_s are the weighted sums of theirs.

Style distances per layer (a table, ``STYLE_DISTANCES``; the config's
``style_loss``, or ``style_layer_losses`` for one per layer):
  ``gram``     the paper's E_l above;
  ``mean_cov`` the squared 2-Wasserstein distance between Gaussians with the
               two means and covariances, divided by N:
               (|mu - mu_A|^2 + tr(C + C_A - 2 (C_A^1/2 C C_A^1/2)^1/2)) / N,
               with ``eps`` added to the diagonal of the generated C;
  ``mean``     the first moment only, |mu - mu_A|^2 / N. Its gradient
               pushes every position alike, where a second moment's
               (``gram``: (S - S_A) f at each position f) pushes hardest
               the positions already like what the target lacks: at deep
               layers, whose channels answer object parts (eyes, faces),
               that grows one such part in one place, a piece of the
               painting pasted into the result. ``mean`` asks for the
               painting's deep features on average, placed nowhere.

Typical positions (the config's ``style_layer_trims``): at deep layers the
positions of a painting whose feature vectors stand furthest from the rest
are its objects' parts (eyes, a nose, a face, a figure's outline), and the
moments of all positions ask the result for them: matched closely, they
paste those parts into the photo. ``typical_mask`` keeps the positions whose
Mahalanobis distance from the features' mean is within the ``1 - trim``
quantile; the style's moments taken under it describe the painting's
texture without its objects.

Spatial control: a mask ``m`` (H, W) at the layer's resolution weighs each
position by m^2 (the paper's F * T, squared by the Gram product), and the
moments are taken per unit of weight, so a region is compared with its style
as a whole image would be. ``regions`` masks (R, H, W) and their weights
(R,) give ``sum_r weight_r * distance(moments under mask r, target r)``.

Scaling (``SCALINGS``, the config's ``loss_scaling``):
  ``paper``     the formulas above, as they stand: the content loss grows with
                the number of positions M_l and every term with the size of the
                layer's activations, so alpha/beta mean something else at
                each image size, for each network and each style image;
  ``relative``  each term divided by its value for an image whose features
                are all zero at that layer (a constant the targets fix):
                content |F - P|^2 / |P|^2, gram style |S - S_A|^2 / |S_A|^2
                (S the Gram matrix per position), mean_cov style
                W_2^2 / (|mu_A|^2 + tr C_A), the target's second moment. Each
                is a squared relative error, free of the pixel count and of
                the layer's activation scale, so the weights mean the same
                at every size and for every network. TV is divided by the
                content image's own TV.
  The factors are computed once with the targets (``content_scale``,
  ``style_target``'s ``scale``, ``tv_scale``); the losses multiply by them.

The objective is a table of terms (``TERMS``: content, style, tv), each a
weight field of the config, a pure function and the making of its target;
``total_loss`` adds them up.

Feature maps are (H, W, C) arrays (one image, no batch axis); ``vmap`` adds
batches. Nothing here knows about files or networks.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

Features = Mapping[str, jnp.ndarray]
SCALINGS = ('relative', 'paper')
EPS = 1e-4  # added to the generated covariance's diagonal (mean_cov)
# ``relative``: a target's mean squared value below this counts as this (a
# layer whose target features are all zero would otherwise divide by 0).
TINY = 1e-8


def gram(features: jnp.ndarray) -> jnp.ndarray:
  """Unnormalised Gram matrix ``F^T F`` (N_l, N_l) of (H, W, N_l) features.

  Accumulated in float32 whatever the feature dtype.
  """
  f = features.reshape(-1, features.shape[-1])
  return jnp.einsum('mi,mj->ij', f, f, preferred_element_type=jnp.float32)


def moments(features: jnp.ndarray, mask: jnp.ndarray | None = None
            ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean (N,) and second raw moment (N, N) of (H, W, N) features.

  With a ``mask`` (H, W), each position counts ``mask**2``; a mask of zeros
  gives zeros (not NaN).
  """
  f = features.reshape(-1, features.shape[-1])
  if mask is None:
    m = f.shape[0]
    mean = jnp.sum(f, axis=0, dtype=jnp.float32) / m
    return mean, gram(features) / m
  w = (mask.reshape(-1, 1) ** 2).astype(jnp.float32)
  total = jnp.maximum(jnp.sum(w), 1e-12)
  mean = jnp.sum(w * f, axis=0) / total
  g = jnp.einsum('mi,mj->ij', w * f, f, preferred_element_type=jnp.float32)
  return mean, g / total


def typical_mask(features: jnp.ndarray, trim: float,
                 ridge: float = 1e-3) -> jnp.ndarray:
  """(H, W) mask of 1s and 0s over (H, W, N) features: 0 at the ``trim``
  fraction of positions whose feature vectors are furthest, in Mahalanobis
  distance, from the mean (the covariance's diagonal raised by ``ridge``
  times its mean value, so that a rank-deficient one inverts); 1 at the
  others. ``trim`` = 0 keeps every position."""
  f = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
  if trim <= 0:
    return jnp.ones(features.shape[:2], jnp.float32)
  centred = f - jnp.mean(f, axis=0)
  cov = centred.T @ centred / f.shape[0]
  n = cov.shape[0]
  cov = cov + ridge * jnp.maximum(jnp.trace(cov) / n, TINY) * jnp.eye(n)
  dist = jnp.sum(centred * jnp.linalg.solve(cov, centred.T).T, axis=-1)
  keep = dist <= jnp.quantile(dist, 1.0 - trim)
  return keep.astype(jnp.float32).reshape(features.shape[:2])


def covariance(mean: jnp.ndarray, srm: jnp.ndarray) -> jnp.ndarray:
  """Covariance from the mean and the second raw moment."""
  return srm - jnp.outer(mean, mean)


def sqrtm(matrix: jnp.ndarray) -> jnp.ndarray:
  """Square root of a symmetric positive semi-definite matrix."""
  values, vectors = jnp.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * jnp.sqrt(jnp.maximum(values, 0.0))) @ vectors.T


def _gram_distance(mean, srm, target):
  """E_l = 1/(4 N^2) sum (S - S_A)^2."""
  n = srm.shape[-1]
  diff = srm - target['srm']
  return jnp.sum(diff * diff) / (4.0 * n * n)


def _mean_distance(mean, srm, target):
  """|mu - mu_A|^2 / N."""
  return jnp.sum((mean - target['mean']) ** 2) / srm.shape[-1]


def _mean_cov_target(mean, srm):
  cov = covariance(mean, srm)
  return {'mean': mean, 'cov': cov, 'cov_sqrt': sqrtm(cov)}


def _mean_cov_distance(mean, srm, target):
  """The squared 2-Wasserstein distance between Gaussian fits, over N."""
  n = srm.shape[-1]
  cov = covariance(mean, srm) + EPS * jnp.eye(n, dtype=srm.dtype)
  root = target['cov_sqrt']
  cross = root @ cov @ root
  values = jnp.linalg.eigvalsh((cross + cross.T) / 2)
  # sqrt's slope is unbounded at 0; below 1e-12 the values count as 0.
  trace_sqrt = jnp.sum(jnp.sqrt(jnp.maximum(values, 1e-12)))
  mean_term = jnp.sum((mean - target['mean']) ** 2)
  cov_term = jnp.trace(target['cov']) + jnp.trace(cov) - 2.0 * trace_sqrt
  return (mean_term + cov_term) / n


@dataclasses.dataclass(frozen=True)
class StyleDistance:
  """One way to compare a layer's moments with the style's.

  ``target(mean, srm)``: what it compares against (a dict of arrays whose
  keys, ``keys``, tell the distances apart); ``distance(mean, srm,
  target)``; ``zero(mean, srm)``: its value for all-zero generated
  features (``relative`` scaling divides by it, floored at ``tiny``);
  ``size(n)``: the target's values for N channels (the memory estimate).
  """
  keys: frozenset
  target: Callable
  distance: Callable
  zero: Callable
  tiny: float
  size: Callable[[int], int]


STYLE_DISTANCES: dict[str, StyleDistance] = {
    'gram': StyleDistance(
        frozenset({'srm'}), lambda mean, srm: {'srm': srm}, _gram_distance,
        lambda mean, srm: jnp.sum(srm * srm) / (4.0 * srm.shape[-1] ** 2),
        TINY / 4.0, lambda n: n * n),
    'mean_cov': StyleDistance(
        frozenset({'mean', 'cov', 'cov_sqrt'}), _mean_cov_target,
        _mean_cov_distance,
        lambda mean, srm: jnp.trace(srm) / srm.shape[-1],  # |mu|^2 + tr C
        TINY, lambda n: n + 2 * n * n),
    'mean': StyleDistance(
        frozenset({'mean'}), lambda mean, srm: {'mean': mean},
        _mean_distance,
        lambda mean, srm: jnp.sum(mean * mean) / srm.shape[-1], TINY,
        lambda n: n),
}


def style_distance_of(kind: str) -> StyleDistance:
  """``STYLE_DISTANCES[kind]``; an unknown name is a ValueError naming the
  accepted ones."""
  if kind not in STYLE_DISTANCES:
    raise ValueError(f'style distance {kind!r}; accepted: '
                     f'{", ".join(STYLE_DISTANCES)}')
  return STYLE_DISTANCES[kind]


def style_target(mean: jnp.ndarray, srm: jnp.ndarray, kind: str,
                 scaling: str = 'paper') -> dict[str, jnp.ndarray]:
  """What ``style_distance`` of ``kind`` compares against, from moments,
  with the ``scale`` its distance is multiplied by (``SCALINGS``)."""
  d = style_distance_of(kind)
  target = d.target(mean, srm)
  zero = d.zero(mean, srm)
  target['scale'] = (jnp.float32(1.0) if scaling == 'paper' else
                     1.0 / jnp.maximum(zero, d.tiny).astype(jnp.float32))
  return target


def style_distance(mean: jnp.ndarray, srm: jnp.ndarray,
                   target: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  """One layer's style loss from the generated moments, times the target's
  ``scale`` (1 if it has none); the kind is the target's (see
  ``style_target``)."""
  distance = STYLE_DISTANCES[style_kind(target)].distance
  return target.get('scale', 1.0) * distance(mean, srm, target)


def style_kind(target: Mapping[str, jnp.ndarray]) -> str:
  """The distance (``STYLE_DISTANCES``) a ``style_target`` is for, from its
  keys (static: a pytree's keys are part of its structure)."""
  keys = frozenset(target) - {'scale'}
  for name, d in STYLE_DISTANCES.items():
    if d.keys == keys:
      return name
  raise ValueError(f'a style target with keys {sorted(keys)} is of no '
                   f'distance; accepted: {", ".join(STYLE_DISTANCES)}')


def layer_style_loss(features: jnp.ndarray, target: Mapping[str, jnp.ndarray],
                     masks: jnp.ndarray | None = None,
                     region_weights: jnp.ndarray | None = None):
  """One layer's style loss; with ``masks`` (R, H, W), the weighted sum
  over regions, ``target``'s leaves then having a leading R axis."""
  if masks is None:
    return style_distance(*moments(features), target)
  per_region = jax.vmap(
      lambda mask, t: style_distance(*moments(features, mask), t))(
          masks, target)
  return jnp.sum(region_weights * per_region)


def layer_content_loss(features: jnp.ndarray, target: jnp.ndarray):
  """``1/2 sum (F - P)^2`` for one layer."""
  diff = features.astype(jnp.float32) - target
  return 0.5 * jnp.sum(diff * diff)


def content_scale(target: jnp.ndarray, scaling: str) -> jnp.ndarray:
  """What a layer's content loss is multiplied by: 1 (``paper``) or one
  over its value for all-zero features, ``1 / (1/2 |P|^2)`` (``relative``:
  the loss becomes ``|F - P|^2 / |P|^2``)."""
  if scaling == 'paper':
    return jnp.float32(1.0)
  target = jnp.asarray(target, jnp.float32)
  zero = 0.5 * jnp.maximum(jnp.sum(target * target), TINY * target.size)
  return 1.0 / zero


def tv_scale(image: jnp.ndarray, scaling: str) -> jnp.ndarray:
  """What the TV term is multiplied by: 1 (``paper``) or one over the TV of
  ``image`` (``relative``; the content image: TV then counts in units of
  the photo's own, at least one grey level squared per pixel)."""
  if scaling == 'paper':
    return jnp.float32(1.0)
  floor = image.shape[0] * image.shape[1]
  return 1.0 / jnp.maximum(tv_loss(jnp.asarray(image, jnp.float32)), floor)


def content_loss(*, feats: Features, targets: Features,
                 weights: Mapping[str, float]) -> jnp.ndarray:
  """``sum_l w_l * 1/2 sum (F - P)^2`` over the layers in ``weights``."""
  return sum(w * layer_content_loss(feats[l], targets[l])
             for l, w in weights.items())


def style_loss(*, feats: Features, targets: Mapping[str, Mapping],
               weights: Mapping[str, float],
               masks: Features | None = None,
               region_weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """``sum_l w_l E_l`` over the layers in ``weights`` (``masks``: one
  (R, H_l, W_l) array per layer, see ``layer_style_loss``)."""
  return sum(w * layer_style_loss(
      feats[l], targets[l], None if masks is None else masks[l],
      region_weights) for l, w in weights.items())


def tv_loss(image: jnp.ndarray) -> jnp.ndarray:
  """Total variation: sum of squared differences of neighbouring pixels."""
  dy = image[1:, :, :] - image[:-1, :, :]
  dx = image[:, 1:, :] - image[:, :-1, :]
  return jnp.sum(dy * dy) + jnp.sum(dx * dx)


def range_penalty(image: jnp.ndarray, lo, hi) -> jnp.ndarray:
  """The sum of squared overshoots (grey levels) of ``image`` outside
  [lo, hi] (per channel). Zero inside the range and smooth, so a line
  search can use it where clipping after each step would break it."""
  over = jnp.maximum(image - hi, 0.0) + jnp.maximum(lo - image, 0.0)
  return jnp.sum(over * over)


def range_scale(image: jnp.ndarray, blank_content) -> jnp.ndarray:
  """What ``range_penalty`` is multiplied by: ``blank_content`` (the content
  loss of all-zero features under the scaling in use: the sum of the
  content layer weights with ``relative``, of ``w_l 1/2 |P|^2`` with
  ``paper``; 1 where that is 0) over the number of values, so that a mean
  squared overshoot of one grey level costs what a blank image's content
  loss does, at any size and in either scaling."""
  blank = jnp.asarray(blank_content, jnp.float32)
  return jnp.where(blank > 0, blank, 1.0) / image.size


# --- The objective's terms ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Term:
  """One term of the objective: ``weight * value(feats, image, target)``.

  ``weight`` names the config field of its weight (alpha, beta...).
  ``value(feats, image, target)`` is a pure function of the generated
  image's features (layer -> (H, W, C)), the image and the term's
  ``target``. ``target(config, context)`` builds that target once per
  scale, outside the step (``context``: ``nst.targets.Context``, the
  images and their features); a pytree of arrays whose structure must not
  depend on a sweep member's values, so a group shares one step (a layer a
  member leaves out gets weight 0). ``layers(target)``: the layers of the
  generated image that ``value`` reads. ``area``: under ``paper`` scaling
  the value grows with the pixel count, so a coarse scale multiplies the
  weight by (final area / its area). ``nbytes(config, shapes)``: the
  target's size for the memory estimate (``shapes``: layer -> (h, w, c)
  at the output's size).
  """
  weight: str
  value: Callable[[Features, jnp.ndarray, Any], jnp.ndarray]
  target: Callable[[Any, Any], Any]
  layers: Callable[[Any], tuple[str, ...]] = lambda target: ()
  area: bool = False
  nbytes: Callable[[Any, Mapping[str, tuple]], int] = (
      lambda config, shapes: 0)


def _content_bytes(config, shapes) -> int:
  return 4 * sum(math.prod(shapes[l]) for l in config.content_layers
                 if l in shapes)


def _style_bytes(config, shapes) -> int:
  """Moments per layer (one set per masked region) and the masks."""
  kinds = dict(zip(config.style_layers, tuple(config.style_layer_losses)))
  # (As spec.regions and spec.layer_distance, which import this module.)
  regions = (len(config.style_masks.split(','))
             if config.style_masks.strip() else 0)
  size = lambda l: STYLE_DISTANCES[kinds.get(l, config.style_loss)].size
  return 4 * sum(size(l)(shapes[l][2])
                 * max(1, regions) + regions * shapes[l][0] * shapes[l][1]
                 for l in config.style_layers if l in shapes)


# name -> Term, in the order the total adds them; the metrics, the progress
# line, the report and the memory estimate go over these. A new term is an
# entry here and its weight field in the config.
TERMS: dict[str, Term] = {
    'content': Term(
        'content_weight',
        lambda feats, image, t: content_loss(feats=feats, targets=t[
            'features'], weights=t['weights']),
        lambda config, context: context.content_target(),
        layers=lambda t: tuple(t['features']), area=True,
        nbytes=_content_bytes),
    'style': Term(
        'style_weight',
        lambda feats, image, t: style_loss(
            feats=feats, targets=t['targets'], weights=t['weights'],
            masks=t['masks'], region_weights=t['region_weights']),
        lambda config, context: context.style_target(),
        layers=lambda t: tuple(t['targets']), nbytes=_style_bytes),
    'tv': Term(
        'tv_weight',
        lambda feats, image, t: t['scale'] * tv_loss(image),
        lambda config, context: {'scale': context.tv_scale()}),
}


def term_layers(targets: Mapping[str, Any]) -> tuple[str, ...]:
  """The layers the terms read (``Term.layers``), each once, in order."""
  out: list[str] = []
  for name in TERMS:
    if name in targets:
      out += [l for l in TERMS[name].layers(targets[name]) if l not in out]
  return tuple(out)


def total_loss(*, feats: Features, image: jnp.ndarray,
               targets: Mapping[str, Any], weights: Mapping[str, Any]
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """``sum_t weights[t] * TERMS[t].value(feats, image, targets[t])`` over
  the terms of ``targets``, and the parts (unweighted values)."""
  # In the table's order (a pytree's dict comes back from jit sorted).
  parts = {name: jnp.asarray(TERMS[name].value(feats, image, targets[name]),
                             jnp.float32)
           for name in TERMS if name in targets}
  total = 0.0
  for name, part in parts.items():
    total = total + weights[name] * part
  return total, parts
