"""Pure loss functions of Gatys, Ecker & Bethge (2015).

Notation of the paper: a layer ``l`` has ``N_l`` filters, each a feature map
of ``M_l`` = height x width positions; ``F^l`` is the (M_l, N_l) matrix of the
generated image's activations, ``P^l`` the content image's, ``G^l = F^T F`` the
Gram matrix of the generated image and ``A^l`` the style image's.

  content:  L_content = sum_l w_l * 1/2 * sum_ij (F_ij - P_ij)^2
  style:    E_l = 1 / (4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2
            L_style = sum_l w_l * E_l
  total:    alpha * L_content + beta * L_style + tv_weight * L_tv

Feature maps are (H, W, C) arrays (one image, no batch axis); ``vmap`` adds
batches. Nothing here knows about files, configs or networks.
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

Features = Mapping[str, jnp.ndarray]


def gram(features: jnp.ndarray) -> jnp.ndarray:
  """Unnormalised Gram matrix ``F^T F`` (N_l, N_l) of (H, W, N_l) features.

  Accumulated in float32 whatever the feature dtype.
  """
  f = features.reshape(-1, features.shape[-1])
  return jnp.einsum('mi,mj->ij', f, f, preferred_element_type=jnp.float32)


def layer_content_loss(features: jnp.ndarray, target: jnp.ndarray):
  """``1/2 sum (F - P)^2`` for one layer."""
  diff = features.astype(jnp.float32) - target
  return 0.5 * jnp.sum(diff * diff)


def layer_style_loss(features: jnp.ndarray, target_gram: jnp.ndarray):
  """``E_l = 1/(4 N^2 M^2) sum (G - A)^2`` for one layer."""
  m = features.shape[0] * features.shape[1]
  n = features.shape[-1]
  diff = gram(features) - target_gram
  return jnp.sum(diff * diff) / (4.0 * n * n * m * m)


def content_loss(*, feats: Features, targets: Features,
                 weights: Mapping[str, float]) -> jnp.ndarray:
  """``sum_l w_l * 1/2 sum (F - P)^2`` over the layers in ``weights``."""
  return sum(w * layer_content_loss(feats[l], targets[l])
             for l, w in weights.items())


def style_loss(*, feats: Features, grams: Features,
               weights: Mapping[str, float]) -> jnp.ndarray:
  """``sum_l w_l E_l`` over the layers in ``weights``."""
  return sum(w * layer_style_loss(feats[l], grams[l])
             for l, w in weights.items())


def tv_loss(image: jnp.ndarray) -> jnp.ndarray:
  """Total variation: sum of squared differences of neighbouring pixels."""
  dy = image[1:, :, :] - image[:-1, :, :]
  dx = image[:, 1:, :] - image[:, :-1, :]
  return jnp.sum(dy * dy) + jnp.sum(dx * dx)


def total_loss(*, feats: Features, image: jnp.ndarray, content_targets:
               Features, style_grams: Features,
               content_weights: Mapping[str, float],
               style_weights: Mapping[str, float], alpha, beta,
               tv_weight=0.0) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """``alpha L_content + beta L_style + tv_weight L_tv`` and its parts."""
  parts = {
      'content': content_loss(feats=feats, targets=content_targets,
                              weights=content_weights),
      'style': style_loss(feats=feats, grams=style_grams,
                          weights=style_weights),
      'tv': tv_loss(image),
  }
  parts = {k: jnp.asarray(v, jnp.float32) for k, v in parts.items()}
  total = alpha * parts['content'] + beta * parts['style']
  total = total + tv_weight * parts['tv']
  return total, parts
