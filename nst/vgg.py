"""VGG-16 / VGG-19 as a Flax linen module that returns named activations.

Layer names follow the VGG paper and Caffe: ``conv1_1, relu1_1, conv1_2,
relu1_2, pool1, conv2_1, ...``. The module computes only up to the deepest
layer that was asked for, so a style loss that stops at ``conv5_1`` never pays
for ``conv5_2 ... pool5``.

Inputs are NHWC float arrays in the library's pixel convention (see
``nst.images``: Caffe BGR, 0-255, minus the ImageNet mean). Parameters are
``{'params': {'conv1_1': {'kernel': (3, 3, in, out), 'bias': (out,)}, ...}}``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nst.errors import UserError

# Convolutions per block; every block ends with a 2x2 pooling layer.
_BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)
POOLINGS = ('max', 'avg')


def layer_names(depth: int = 19) -> tuple[str, ...]:
  """All layer names of VGG-``depth`` in forward order."""
  if depth not in _BLOCKS:
    raise UserError(f'unknown VGG depth {depth!r}; accepted: 16, 19')
  names = []
  for block, convs in enumerate(_BLOCKS[depth], start=1):
    for i in range(1, convs + 1):
      names += [f'conv{block}_{i}', f'relu{block}_{i}']
    names.append(f'pool{block}')
  return tuple(names)


def conv_names(depth: int = 19) -> tuple[str, ...]:
  """Names of the layers that hold parameters."""
  return tuple(n for n in layer_names(depth) if n.startswith('conv'))


def check_layers(layers: Iterable[str], depth: int = 19) -> None:
  """Raises a UserError naming any layer VGG-``depth`` does not have."""
  valid = layer_names(depth)
  bad = [l for l in layers if l not in valid]
  if bad:
    raise UserError(f'unknown layer(s) {bad} for VGG-{depth}; '
                    f'accepted: {", ".join(valid)}')


def min_size(layers: Iterable[str]) -> int:
  """Smallest image side (px) for which every named layer is at least 1x1."""
  pools = 0
  for name in layers:
    block = int(name[4])  # conv3_1 -> 3; pool3 -> 3
    pools = max(pools, block if name.startswith('pool') else block - 1)
  return 2 ** pools


class VGG(nn.Module):
  """VGG feature extractor.

  Attributes:
    depth: 16 or 19.
    pooling: 'max' (as trained) or 'avg' (as in Gatys et al. 2015).
    dtype: computation dtype of the convolutions (parameters stay float32).
  """
  depth: int = 19
  pooling: str = 'max'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               layers: Sequence[str] | None = None) -> dict[str, jnp.ndarray]:
    """Returns {name: activation} for ``layers`` (all layers if None)."""
    names = layer_names(self.depth)
    wanted = set(names if layers is None else layers)
    check_layers(wanted, self.depth)
    if self.pooling not in POOLINGS:
      raise UserError(f'unknown pooling {self.pooling!r}; accepted: {POOLINGS}')
    last = max(names.index(n) for n in wanted)
    out = {}
    for name in names[:last + 1]:
      if name.startswith('conv'):
        width = _WIDTHS[int(name[4]) - 1]
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    name=name)(x)
      elif name.startswith('relu'):
        x = nn.relu(x)
      elif self.pooling == 'max':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      if name in wanted:
        out[name] = x
    return out
