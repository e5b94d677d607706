"""VGG-16, VGG-19 and illustration2vec as a Flax linen module of named layers.

Layer names follow the VGG paper and Caffe: ``conv1_1, relu1_1, conv1_2,
relu1_2, pool1, conv2_1, ...``. The module computes only up to the deepest
layer that was asked for, so a style loss that stops at ``conv5_1`` never pays
for ``conv5_2 ... pool5``.

Networks (``network`` in the config):
  ``vgg19``, ``vgg16``: Simonyan & Zisserman (2014), 3x3 convolutions in five
    blocks of 2, 2, 4 (3), 4 (3), 4 (3), each block ending in 2x2 pooling.
  ``i2v``: the illustration2vec network (Saito & Matsui 2015) that the
    project's TensorFlow seed offered for drawings: conv1_1, pool1, conv2_1,
    pool2, conv3_1-2, pool3, conv4_1-2, pool4, conv5_1-2, pool5 (the widths of
    VGG). Its weights come only from its Caffe model
    (``scripts/convert_weights.py``); like the seed, it is fed the same
    input as VGG.

Inputs are NHWC float arrays in the library's pixel convention (see
``nst.images``: Caffe BGR, 0-255, minus the ImageNet mean). Parameters are
``{'params': {'conv1_1': {'kernel': (3, 3, in, out), 'bias': (out,)}, ...}}``;
``with_flipped`` adds a 'flipped' collection of the kernels the backward
pass uses, and ``prepare`` (what a step runs with) also a 'winograd'
collection of transformed kernels for the layers computed by
``nst.winograd`` (speed-ups: the values and gradients are the same without
them, up to float32 rounding for Winograd).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst import winograd
from nst.errors import UserError

# Convolutions per block; every block ends with a 2x2 pooling layer.
_BLOCKS = {'vgg19': (2, 2, 4, 4, 4), 'vgg16': (2, 2, 3, 3, 3),
           'i2v': (1, 1, 2, 2, 2)}
NETWORKS = tuple(_BLOCKS)
# A network's variables: {'params': {layer: {'kernel', 'bias'}}}.
Params = dict[str, Any]
_WIDTHS = (64, 128, 256, 512, 512)
POOLINGS = ('max', 'avg')


def check_network(network: str) -> str:
  if network not in _BLOCKS:
    raise UserError(f'unknown network {network!r}; accepted: '
                    f'{", ".join(NETWORKS)}')
  return network


def layer_names(network: str = 'vgg19') -> tuple[str, ...]:
  """All layer names of ``network`` in forward order."""
  names = []
  for block, convs in enumerate(_BLOCKS[check_network(network)], start=1):
    for i in range(1, convs + 1):
      names += [f'conv{block}_{i}', f'relu{block}_{i}']
    names.append(f'pool{block}')
  return tuple(names)


def conv_names(network: str = 'vgg19') -> tuple[str, ...]:
  """Names of the layers that hold parameters."""
  return tuple(n for n in layer_names(network) if n.startswith('conv'))


def width(layer: str) -> int:
  """Channels of a layer (``conv3_1`` -> 256)."""
  return _WIDTHS[int(layer[4]) - 1]


def check_layers(layers: Iterable[str], network: str = 'vgg19') -> None:
  """Raises a UserError naming any layer ``network`` does not have."""
  valid = layer_names(network)
  bad = [l for l in layers if l not in valid]
  if bad:
    raise UserError(f'unknown layer(s) {bad} for {network}; '
                    f'accepted: {", ".join(valid)}')


def min_size(layers: Iterable[str]) -> int:
  """Smallest image side (px) for which every named layer is at least 1x1."""
  pools = 0
  for name in layers:
    block = int(name[4])  # conv3_1 -> 3; pool3 -> 3
    pools = max(pools, block if name.startswith('pool') else block - 1)
  return 2 ** pools


# Maps with fewer positions than this are convolved as one matrix product.
SMALL_MAP = 16


def conv(x, kernel):
  """3x3 'same' convolution of NHWC ``x`` with an HWIO kernel.

  A map of fewer than ``SMALL_MAP`` positions (a coarse scale's deepest
  layers: 2x4 at relu5_1 of a 64 px image) is convolved as one matrix
  product of its 3x3 neighbourhoods with the kernel, which on a CPU is
  many times faster than XLA's convolution of such a map (README, Speed)
  and no slower elsewhere."""
  b, h, w, c = x.shape
  if h * w < SMALL_MAP:
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w]
                               for i in range(3) for j in range(3)], -1)
    return jnp.einsum('bhwk,ko->bhwo', patches,
                      kernel.reshape(9 * c, kernel.shape[-1]))
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def flip(kernel):
  """The kernel of a 3x3 convolution's input gradient: rotated 180 degrees,
  input and output channels swapped (HWIO -> HWOI read as HWIO)."""
  return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


@jax.custom_vjp
def _conv_with_flipped(x, kernel, flipped):
  """``conv(x, kernel)`` whose input gradient uses ``flipped`` (=
  ``flip(kernel)``, computed once outside the step) instead of transposing
  the kernel in every backward pass. The gradient with respect to
  ``flipped`` is zero: it is a constant derived from ``kernel``."""
  return conv(x, kernel)


def _conv_fwd(x, kernel, flipped):
  return conv(x, kernel), (x, kernel, flipped)


def _conv_bwd(res, g):
  x, kernel, flipped = res
  # Unused (and removed by XLA) unless the kernel is differentiated.
  dkernel = jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0]
  return conv(g, flipped), dkernel, jnp.zeros_like(flipped)


_conv_with_flipped.defvjp(_conv_fwd, _conv_bwd)


def with_flipped(variables):
  """``variables`` ({'params': ...}) plus a 'flipped' collection holding
  ``flip`` of every kernel. Given it, the network's backward pass uses these
  instead of transposing each kernel at every step, which on a CPU costs
  time, and more inside a loop such as L-BFGS's line search; with these
  kernels, a loop costs nothing extra (experiments/cpu_kernels)."""
  return {**variables, 'flipped': {
      name: {'kernel': flip(p['kernel'])}
      for name, p in variables['params'].items()}}


CONVOLUTIONS = ('auto', 'direct', 'winograd')
# Channels (input or output, the larger) from which 'winograd' (and 'auto'
# on a CPU) transforms a layer: VGG's blocks 3 to 5 (256 and 512). Below
# that, on a CPU, the transforms' memory traffic outweighs the 4x fewer
# multiplies (measurements: experiments/cpu_kernels).
WINOGRAD_MIN_CHANNELS = 256
# 'auto' also leaves a layer direct when its input has fewer values than
# this (height x width x channels, over the members a device runs at once):
# smaller layers gain nothing and cost compile time (experiments/
# cpu_kernels).
AUTO_WINOGRAD_MIN_SIZE = 16 * 16 * 512


def auto_winograd_min_size(members: int = 1) -> int:
  """The values per image from which 'auto' runs a layer by Winograd when
  ``members`` images go through the network at once (a sweep's batch on
  one device, under ``vmap``, where the network sees one image): a batch's
  transforms and products gain as one large layer's do (a batch of 8 at
  128 px: 0.88x the step time of 'auto' counted per image; experiments/
  cpu_kernels)."""
  return -(-AUTO_WINOGRAD_MIN_SIZE // max(1, members))


def check_convolution(convolution: str, dtype=jnp.float32) -> str:
  if convolution not in CONVOLUTIONS:
    raise UserError(f'unknown convolution {convolution!r}; accepted: '
                    f'{", ".join(CONVOLUTIONS)}')
  if convolution == 'winograd' and jnp.dtype(dtype) != jnp.float32:
    raise UserError(f"convolution='winograd' needs compute_dtype float32, "
                    f'not {jnp.dtype(dtype).name} (its transforms lose too '
                    "much precision in 16 bits); use 'auto' or 'direct'")
  return convolution


def winograd_layers(params, convolution: str = 'auto', dtype=jnp.float32,
                    layers: Iterable[str] | None = None,
                    backend: str | None = None,
                    max_side: int | None = None,
                    members: int = 1) -> tuple[str, ...]:
  """The conv layers of ``params`` that ``prepare`` gives Winograd kernels:
  none for 'direct'; for 'winograd', those with at least
  ``WINOGRAD_MIN_CHANNELS`` input or output channels, up to the deepest of
  ``layers`` (the layers the step reads; default all); 'auto' is
  'winograd' on a CPU backend (``backend``, default JAX's) in float32 and
  'direct' otherwise.

  With 'auto' and ``max_side`` (the longest side, px, of any image the
  network will be given), a layer whose input cannot reach
  ``AUTO_WINOGRAD_MIN_SIZE`` values at that size over ``members`` images
  (a batch of a sweep, per device) is left out:
  ``VGG(winograd_min_size=auto_winograd_min_size(members))`` would run it
  direct."""
  check_convolution(convolution, dtype)
  least = 0
  if convolution == 'auto':
    cpu = (backend or jax.default_backend()) == 'cpu'
    convolution = ('winograd' if cpu and jnp.dtype(dtype) == jnp.float32
                   else 'direct')
    least = AUTO_WINOGRAD_MIN_SIZE
  if convolution == 'direct':
    return ()
  def fits(name):
    ins, outs = params['params'][name]['kernel'].shape[2:]
    # Block b's input is the image pooled b - 1 times (halved, rounded down).
    side = max_side // 2 ** (int(name[4]) - 1) if max_side else None
    return max(ins, outs) >= WINOGRAD_MIN_CHANNELS and (
        side is None or side * side * ins * members >= least)

  return tuple(n for n in up_to(params['params'], layers) if fits(n))


def up_to(names: Iterable[str], layers: Iterable[str] | None = None
          ) -> tuple[str, ...]:
  """The layers of ``names`` (e.g. a params dict's) at or above the deepest
  of ``layers`` (default: all of them), in forward order: those a network
  stopping at ``layers`` runs."""
  # VGG-19's names, in forward order, hold those of the other networks.
  order = layer_names('vgg19')
  deepest = (len(order) if layers is None
             else max((order.index(n) for n in layers), default=-1))
  return tuple(n for n in order if n in names and order.index(n) <= deepest)


def prepare(variables, convolution: str = 'auto', dtype=jnp.float32,
            layers: Iterable[str] | None = None, backend: str | None = None,
            max_side: int | None = None, members: int = 1):
  """The variables a step runs with: ``with_flipped(variables)`` and, for
  the layers ``winograd_layers`` selects, a 'winograd' collection of their
  transformed kernels (``{'forward': transform(kernel), 'backward':
  transform(flip(kernel))}``, computed here once). The network's outputs
  and gradients are those of ``variables`` up to float32 rounding.

  Given ``layers``, only the parameters of the layers up to the deepest of
  them are kept (the network never runs the others): a run that stops at
  relu2_1 holds 1 MB of VGG-19's 80, not all of it twice."""
  if layers is not None:
    layers = tuple(layers)
    variables = {**variables, 'params': {
        n: variables['params'][n] for n in up_to(variables['params'],
                                                 layers)}}
  out = with_flipped(variables)
  chosen = winograd_layers(variables, convolution, dtype, layers, backend,
                           max_side, members)
  if chosen:
    out['winograd'] = {name: {
        'forward': winograd.transform(variables['params'][name]['kernel']),
        'backward': winograd.transform(out['flipped'][name]['kernel'])}
        for name in chosen}
  return out


@jax.custom_vjp
def _winograd_conv(x, kernel, forward, backward):
  """``conv(x, kernel)`` computed as ``winograd.conv3x3(x, forward)``;
  the input gradient is ``winograd.conv3x3(g, backward)`` (backward =
  ``transform(flip(kernel))``). The kernel's gradient is the direct
  convolution's (removed by XLA unless asked for); the transformed kernels
  get zero, being constants derived from it."""
  return winograd.conv3x3(x, forward)


def _winograd_fwd(x, kernel, forward, backward):
  return winograd.conv3x3(x, forward), (x, kernel, forward, backward)


def _winograd_bwd(res, g):
  x, kernel, forward, backward = res
  dkernel = jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0]
  return (winograd.conv3x3(g, backward), dkernel, jnp.zeros_like(forward),
          jnp.zeros_like(backward))


_winograd_conv.defvjp(_winograd_fwd, _winograd_bwd)


class Conv3x3(nn.Module):
  """A 3x3 'same' convolution with bias; the parameters of ``nn.Conv``
  (same names, shapes and initialisers). With a 'winograd' collection for
  this layer (``prepare``) and an input of at least ``winograd_min_size``
  values per image, it runs ``_winograd_conv``; else with a 'flipped' one
  (``with_flipped``), ``_conv_with_flipped``; otherwise ``lax.conv``."""
  features: int
  dtype: jnp.dtype = jnp.float32
  winograd_min_size: int = 0

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = (v.astype(self.dtype) for v in (x, kernel, bias))
    if (self.has_variable('winograd', 'forward')
        and x[0].size >= self.winograd_min_size):
      check_convolution('winograd', self.dtype)
      return _winograd_conv(x, kernel,
                            self.get_variable('winograd', 'forward'),
                            self.get_variable('winograd', 'backward')) + bias
    if self.has_variable('flipped', 'kernel'):
      flipped = self.get_variable('flipped', 'kernel').astype(self.dtype)
      return _conv_with_flipped(x, kernel, flipped) + bias
    return conv(x, kernel) + bias


def pool(x: jnp.ndarray, kind: str) -> jnp.ndarray:
  """2x2 pooling with stride 2 of (B, H, W, C), dropping an odd last row or
  column (as VALID pooling does).

  Written as a reshape and a max (or mean) over the window axes rather than
  ``reduce_window``: the same values, and its gradient is elementwise (the
  gradient of ``reduce_window`` max is a select-and-scatter, which on CPU
  cost about a seventh of a whole step). Where a window's maximum is tied,
  the gradient is shared between the tied positions; after a ReLU the only
  ties that occur in practice are zeros, whose gradient the ReLU then drops.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
  return x.max(axis=(2, 4)) if kind == 'max' else x.mean(axis=(2, 4))


def _block(module: nn.Module, x: jnp.ndarray, names: tuple[str, ...],
           wanted: frozenset, pooling: str, dtype,
           winograd_min_size: int) -> tuple:
  """Runs the layers ``names`` (part of one block) from ``x``; returns the
  last activation and {name: activation} of the wanted ones."""
  out = {}
  for name in names:
    if name.startswith('conv'):
      x = Conv3x3(width(name), dtype=dtype,
                  winograd_min_size=winograd_min_size, name=name,
                  parent=module)(x)
    elif name.startswith('relu'):
      x = nn.relu(x)
    else:
      x = pool(x, pooling)
    if name in wanted:
      out[name] = x
  return x, out


# Recomputes a block's activations in the backward pass instead of keeping
# them: only each block's input is stored. ``nn.remat`` lifts
# ``jax.checkpoint`` over the module, so the parameter tree is unchanged.
_remat_block = nn.remat(_block, static_argnums=(2, 3, 4, 5, 6))


class VGG(nn.Module):
  """Feature extractor of VGG-19, VGG-16 or I2V.

  Attributes:
    network: 'vgg19', 'vgg16' or 'i2v'.
    pooling: 'max' (as trained) or 'avg' (as in Gatys et al. 2015).
    dtype: computation dtype of the convolutions and activations
      (parameters stay float32); ``bfloat16`` halves activation memory and,
      on GPUs and TPUs, runs the convolutions on the bf16 units.
    remat: rematerialise each block (``jax.checkpoint`` around it): the
      backward pass recomputes the block's activations from its input, so
      a step keeps about one block's activations instead of all of them, at
      the cost of a second forward pass. The outputs are the same.
    winograd_min_size: the layers given Winograd kernels (``prepare``) use
      them only where their input has at least this many values per image
      (``AUTO_WINOGRAD_MIN_SIZE`` for the config's 'auto').
  """
  network: str = 'vgg19'
  pooling: str = 'max'
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  winograd_min_size: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               layers: Sequence[str] | None = None) -> dict[str, jnp.ndarray]:
    """Returns {name: activation} for ``layers`` (all layers if None)."""
    names = layer_names(self.network)
    wanted = frozenset(names if layers is None else layers)
    check_layers(wanted, self.network)
    if self.pooling not in POOLINGS:
      raise UserError(f'unknown pooling {self.pooling!r}; accepted: {POOLINGS}')
    names = names[:max(names.index(n) for n in wanted) + 1]
    block = _remat_block if self.remat else _block
    out = {}
    for b in sorted({int(n[4]) for n in names}):
      x, found = block(self, x, tuple(n for n in names if int(n[4]) == b),
                       wanted, self.pooling, self.dtype,
                       self.winograd_min_size)
      out.update(found)
    return out
