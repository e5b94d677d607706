"""The normalised VGG: same function up to positive per-channel scales, and
mean activation one on the normalising images."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from nst import images, normalize, vgg, weights

SPECS = ('skimage:astronaut', 'skimage:coffee', 'skimage:rocket')
SIZE = 32


def _activations(params, x, network='vgg19', pooling='avg'):
  layers = vgg.conv_names(network) + tuple(
      'relu' + c[4:] for c in vgg.conv_names(network))
  return vgg.VGG(network=network, pooling=pooling).apply(params, x, layers)


def _check_normalised(params, normed, means, network='vgg19',
                      floor=normalize.DEFAULT_FLOOR):
  divisors = normalize.scales(means, floor)
  # 1. On the normalising images, every filter above the floor has a mean
  # activation of one; the floored ones have mean / divisor.
  batch = normalize.load_batch(SPECS, SIZE)
  after = normalize.activation_means(normed, batch, network)
  # Filters active at only a few positions have a small mean measured with
  # float32 rounding in both passes, so a few of them land up to ~2e-3 off.
  for name, m in means.items():
    kept = m >= floor * np.median(m)
    got = after[name][kept & (m > 0)]
    np.testing.assert_allclose(got, 1.0, rtol=5e-3, err_msg=name)
    assert np.mean(np.abs(got - 1) < 1e-4) >= 0.98, name
    np.testing.assert_allclose(after[name][~kept],
                               m[~kept] / divisors[name][~kept], rtol=5e-3,
                               atol=1e-6, err_msg=name)
  # 2. On another image, each conv layer's pre-activation is the original's
  # divided by the positive per-channel mean, so every ReLU has the same
  # sign pattern.
  x = images.load('skimage:chelsea', 48)[None]
  before = _activations(params, x, network)
  now = _activations(normed, x, network)
  for name in vgg.conv_names(network):
    m = divisors[name]
    orig, new = np.asarray(before[name]), np.asarray(now[name])
    scale = np.abs(orig).max()
    np.testing.assert_allclose(new * m, orig, atol=2e-5 * scale, rtol=2e-4,
                               err_msg=name)
    clear = np.abs(orig) > 1e-4 * scale  # signs of values that are not ~0
    np.testing.assert_array_equal(np.sign(new)[clear], np.sign(orig)[clear],
                                  err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('network,floor', [('vgg19', 0.1), ('i2v', 0.1),
                                           ('vgg19', 0.0)])
def test_random_network(network, floor):
  params = weights.random_params(network, seed=2)
  # Kill one conv1_1 filter: its mean is zero. It is floored, or with the
  # strict rule (floor 0) left unscaled; nothing becomes inf or nan.
  params = jax.tree_util.tree_map(np.array, params)
  params['params']['conv1_1']['bias'][5] = -1e6
  normed, means = normalize.normalize(params, network, SPECS, SIZE,
                                      floor=floor)
  assert means['conv1_1'][5] == 0
  assert all(np.all(np.isfinite(v)) for v in
             jax.tree_util.tree_leaves(normed))
  divisor = floor * np.median(means['conv1_1']) if floor else 1.0
  np.testing.assert_allclose(normed['params']['conv1_1']['bias'][5],
                             -1e6 / divisor, rtol=1e-6)
  assert means['conv1_1'][0] != pytest.approx(1.0, rel=0.1)  # a real change
  _check_normalised(params, normed, means, network, floor)


@pytest.mark.pretrained
def test_real_network_at_32px():
  params = weights.load('')
  normed, means = normalize.normalize(params, 'vgg19', SPECS, SIZE)
  # The pretrained network's means are far from one: normalising matters.
  assert max(np.median(m) for m in means.values()) > 10
  _check_normalised(params, normed, means)


def test_rescale_is_exact_for_known_means():
  params = weights.random_params('vgg16', seed=0)
  divisors = {n: np.full(vgg.width(n), 2.0) for n in vgg.conv_names('vgg16')}
  out = normalize.rescale(params, divisors, 'vgg16')
  p, q = params['params'], out['params']
  # First layer: kernel and bias / 2; later layers: kernel x 2 / 2, bias / 2.
  np.testing.assert_allclose(q['conv1_1']['kernel'],
                             np.asarray(p['conv1_1']['kernel']) / 2)
  np.testing.assert_allclose(q['conv3_2']['kernel'], p['conv3_2']['kernel'])
  np.testing.assert_allclose(q['conv3_2']['bias'],
                             np.asarray(p['conv3_2']['bias']) / 2)


def _script():
  path = Path(__file__).parents[1] / 'scripts' / 'normalize_vgg.py'
  spec = importlib.util.spec_from_file_location('normalize_vgg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_script_writes_a_params_file(tmp_path, capsys):
  folder = tmp_path / 'imgs'
  folder.mkdir()
  for spec in SPECS[:2]:
    images.save(folder / f'{spec[8:]}.png', images.load(spec, 40))
  out = tmp_path / 'n.npz'
  assert _script().main([str(out), '--weights', 'random', '--images',
                         str(folder), '--size', '32', '--floor', '0']) == 0
  normed = weights.load(str(out))
  batch = normalize.load_batch(sorted(map(str, folder.iterdir())), 32)
  after = normalize.activation_means(normed, batch)
  live = after['conv5_4'] > 0  # a random net at 32 px has dead filters
  assert live.sum() > 400
  np.testing.assert_allclose(after['conv5_4'][live], 1.0, rtol=5e-3)
  assert 'conv5_4' in capsys.readouterr().out
  # Bad input: one clear error, exit 2, nothing written.
  assert _script().main([str(tmp_path / 'x.npz'), '--weights', 'random',
                         '--images', str(tmp_path / 'missing.jpg'),
                         '--size', '32']) == 2
  assert 'does not exist' in capsys.readouterr().err
  (tmp_path / 'empty').mkdir()
  assert _script().main([str(tmp_path / 'x.npz'), '--weights', 'random',
                         '--images', str(tmp_path / 'empty')]) == 2
  assert 'holds no images (.png, .jpg' in capsys.readouterr().err
  assert not (tmp_path / 'x.npz').exists()
