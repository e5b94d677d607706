"""3x3 'same' convolutions by Winograd's minimal filtering, F(4x4, 3x3).

A direct 3x3 convolution spends 9 multiply-adds per output pixel and pair of
channels. Winograd's algorithm (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks") computes each 4x4 tile of the output from a
6x6 tile of the input with 36: 4x fewer. Per tile and channel,

    Y = A^T [ (G g G^T) . (B^T d B) ] A      (. elementwise, summed over the
                                              input channels: a matmul)

with d the 6x6 input tile, g the 3x3 kernel and A, B, G the constant
matrices below (interpolation points 0, 1, -1, 2, -2 and infinity). The
kernel transform ``G g G^T`` depends only on the weights, so ``transform``
runs once, outside the step; a convolution is then an input transform (adds
and small multiplies), 36 matmuls over the channels, and an output transform.

It pays where the matmuls dominate: many channels and activations small
enough for the transforms' buffers (2.25x the input) to stay in cache -- on a
CPU, VGG's blocks 3 to 5. The results equal ``lax.conv`` up to float32
rounding (relative error about 1e-5 with these points). GPUs already run
convolutions near their peak through cuDNN, so ``nst.vgg`` uses this only where
asked (``convolution`` in the config; 'auto' picks it on CPUs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]])
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]])
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]])
TILE = 4  # output pixels per tile side; input tiles are TILE + 2


# The two-sided transforms as single matrices over the flattened tile:
# (B^T d B)[k, l] = sum_rs _BB[6k + l, 6r + s] d[r, s], and likewise
# A^T m A and G g G^T.
_BB = np.kron(_BT, _BT).astype(np.float32)  # (36, 36)
_AA = np.kron(_AT, _AT).astype(np.float32)  # (16, 36)
_GG = np.kron(_G, _G).astype(np.float32)    # (36, 9)
_EXACT = jax.lax.Precision.HIGHEST  # the transforms never in TF32/bf16


def transform(kernel: jnp.ndarray) -> jnp.ndarray:
  """(3, 3, in, out) HWIO kernel -> (36, in, out): ``G g G^T`` per channel
  pair, flattened over the 6x6 tile positions. Computed in float32 at full
  precision; run it once per kernel, outside the step."""
  flat = jnp.asarray(kernel, jnp.float32).reshape(9, -1)
  return jnp.dot(_GG, flat, precision=_EXACT).reshape(36, *kernel.shape[2:])


def conv3x3(x: jnp.ndarray, u: jnp.ndarray) -> jnp.ndarray:
  """'same' 3x3 convolution (zero padding 1, stride 1, no bias) of NHWC
  ``x`` with a kernel given as ``transform(kernel)``; equal to
  ``lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)))`` in NHWC
  / HWIO up to rounding. Any height and width: the output is computed in
  4x4 tiles and cropped."""
  b, h, w, c = x.shape
  th, tw = -(-h // TILE), -(-w // TILE)
  # Tile (i, j) reads rows 4i .. 4i+5 and columns 4j .. 4j+5 of the padded
  # input, so position (r, s) of every tile is one strided slice. (Built
  # from reshapes instead, they compile faster but run slower on a CPU:
  # experiments/cpu_kernels.)
  xp = jnp.pad(x, ((0, 0), (1, TILE * th + 1 - h), (1, TILE * tw + 1 - w),
                   (0, 0)))
  d = jnp.stack([xp[:, r:r + TILE * th:TILE, s:s + TILE * tw:TILE]
                 for r in range(6) for s in range(6)]).reshape(36, -1, c)
  v = jnp.einsum('pq,qtc->ptc', _BB, d, precision=_EXACT)
  m = jnp.einsum('ptc,pcd->ptd', v, u.astype(x.dtype))
  y = jnp.einsum('rp,ptd->rtd', _AA, m, precision=_EXACT)
  # (r, s, b, i, j, out) -> (b, 4i + r, 4j + s, out)
  y = y.reshape(TILE, TILE, b, th, tw, -1).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(b, TILE * th, TILE * tw, -1)[:, :h, :w]
