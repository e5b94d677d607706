"""Reading .caffemodel files, written here byte by byte (not with the reader's
own message classes), in the three layer encodings Caffe has used."""
import importlib.util
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('google.protobuf')

from nst import caffemodel, convert, vgg, weights  # noqa: E402
from nst.errors import UserError  # noqa: E402

ROOT = Path(__file__).parents[1]


# --- a minimal protobuf writer -----------------------------------------------

def _varint(n):
  out = bytearray()
  while True:
    byte, n = n & 0x7f, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(field, wire):
  return _varint(field << 3 | wire)


def _bytes(field, payload):
  return _key(field, 2) + _varint(len(payload)) + payload


def _int(field, n):
  return _key(field, 0) + _varint(n)


def _blob(array, legacy=False, packed=True):
  array = np.asarray(array, np.float32)
  if packed:
    data = _bytes(5, array.astype('<f4').tobytes())
  else:
    data = b''.join(_key(5, 5) + struct.pack('<f', x) for x in array.ravel())
  if legacy:  # num, channels, height, width
    dims = (1,) * (4 - array.ndim) + array.shape
    head = b''.join(_int(i + 1, d) for i, d in enumerate(dims))
  else:
    head = _bytes(7, _bytes(1, b''.join(_varint(d) for d in array.shape)))
  return head + data


def _v1_layer(name, blobs, type_id=4):
  return _bytes(2, _bytes(4, name.encode()) + _int(5, type_id)
                + b''.join(_bytes(6, b) for b in blobs))


def _layer(name, blobs, kind=b'Convolution'):
  extra = _bytes(106, _int(1, 7))  # a convolution_param, to be skipped
  return _bytes(100, _bytes(1, name.encode()) + _bytes(2, kind) + extra
                + b''.join(_bytes(7, b) for b in blobs))


def _v0_in_v1(name, blobs):
  inner = _bytes(1, name.encode()) + b''.join(_bytes(50, b) for b in blobs)
  return _bytes(2, _bytes(1, inner))


# --- tests -------------------------------------------------------------------

def _caffe_weights(network, seed=0):
  """Random Caffe-layout (out, in, kh, kw) kernels and biases."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in weights.expected_shapes(network).items():
    layer, leaf = name.split('/')
    if leaf == 'kernel':
      kh, kw, cin, cout = shape
      out.setdefault(layer, {})['kernel'] = rng.normal(
          0, (2 / (9 * cin)) ** 0.5, (cout, cin, kh, kw)).astype(np.float32)
    else:
      out.setdefault(layer, {})['bias'] = rng.normal(
          0, 0.1, shape).astype(np.float32)
  return out


def test_i2v_v1_caffemodel_converts_and_computes_like_caffe(tmp_path):
  caffe = _caffe_weights('i2v')
  body = _bytes(1, b'illust2vec')
  body += _v1_layer('data', [], type_id=5)
  for name in vgg.conv_names('i2v'):
    body += _v1_layer(name, [_blob(caffe[name]['kernel'], legacy=True),
                             _blob(caffe[name]['bias'], legacy=True)])
    body += _v1_layer('relu' + name[4:], [], type_id=18)
  # Layers the network does not use are ignored.
  body += _v1_layer('fc6', [_blob(np.ones((4, 8)), legacy=True),
                            _blob(np.ones(4), legacy=True)], type_id=14)
  src = tmp_path / 'i2v.caffemodel'
  src.write_bytes(body)

  spec = importlib.util.spec_from_file_location(
      'convert_weights', ROOT / 'scripts' / 'convert_weights.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  assert script.main([str(src), str(tmp_path / 'i2v.npz'),
                      '--network', 'i2v']) == 0
  params = weights.load(str(tmp_path / 'i2v.npz'), 'i2v')
  for name in vgg.conv_names('i2v'):
    np.testing.assert_array_equal(
        params['params'][name]['kernel'],
        caffe[name]['kernel'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params['params'][name]['bias'],
                                  caffe[name]['bias'])
  # The converted network computes what Caffe's NCHW/OIHW convolutions do.
  x = np.random.default_rng(1).normal(0, 50, (1, 3, 12, 16)).astype(
      np.float32)
  ref = x
  for name in ('conv1_1',):
    ref = jax.lax.conv_general_dilated(
        ref, caffe[name]['kernel'], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
    ref = ref + caffe[name]['bias'][None, :, None, None]
  pool = jnp.maximum(ref, 0).reshape(1, 64, 6, 2, 8, 2).max(axis=(3, 5))
  ref2 = jax.lax.conv_general_dilated(
      pool, caffe['conv2_1']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NCHW', 'OIHW', 'NCHW')) + caffe['conv2_1'][
          'bias'][None, :, None, None]
  ours = vgg.VGG(network='i2v').apply(
      params, jnp.asarray(x.transpose(0, 2, 3, 1)), ('conv1_1', 'conv2_1'))
  np.testing.assert_allclose(ours['conv1_1'][0], ref[0].transpose(1, 2, 0),
                             rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(ours['conv2_1'][0], ref2[0].transpose(1, 2, 0),
                             rtol=1e-4, atol=1e-3)


def test_current_and_v0_encodings(tmp_path):
  k = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 7
  b = np.array([0.5, -1.25], np.float32)
  body = (_layer('conv_a', [_blob(k), _blob(b, packed=False)])
          + _layer('relu_a', [], kind=b'ReLU')
          + _v0_in_v1('conv_b', [_blob(k[:1], legacy=True),
                                 _blob(b[:1], legacy=True)]))
  path = tmp_path / 'm.caffemodel'
  path.write_bytes(body)
  blobs = caffemodel.read(path)
  assert sorted(blobs) == ['conv_a', 'conv_b']
  np.testing.assert_array_equal(blobs['conv_a'][0], k)
  np.testing.assert_array_equal(blobs['conv_a'][1], b)
  np.testing.assert_array_equal(blobs['conv_b'][0], k[:1])
  np.testing.assert_array_equal(blobs['conv_b'][1].ravel(), b[:1])


def test_bad_caffemodels_are_user_errors(tmp_path):
  garbage = tmp_path / 'g.caffemodel'
  garbage.write_bytes(b'\xff\xff\xff\xff not protobuf')
  with pytest.raises(UserError, match='is not a Caffe model'):
    caffemodel.read(garbage)
  text = tmp_path / 'deploy.caffemodel'
  text.write_bytes(b'')
  with pytest.raises(UserError, match='no layer with parameters'):
    caffemodel.read(text)
  small = tmp_path / 's.caffemodel'
  small.write_bytes(_layer('conv1_1', [_blob(np.zeros((64, 3, 3, 3))),
                                       _blob(np.zeros(64))]))
  with pytest.raises(UserError, match='has no layer conv1_2; is it a vgg19'):
    convert.from_caffemodel(small, 'vgg19')
  bad = tmp_path / 'b.caffemodel'
  blob = _bytes(7, _bytes(1, _varint(2) + _varint(3))) + _bytes(
      5, np.zeros(5, '<f4').tobytes())
  bad.write_bytes(_bytes(100, _bytes(1, b'conv1_1') + _bytes(7, blob)))
  with pytest.raises(UserError, match=r'shape \(2, 3\) holds 5 values'):
    caffemodel.read(bad)


def test_a_vgg19_caffemodel_read_as_a_vgg16_is_refused(tmp_path):
  # Every layer a VGG-16 needs is there, but conv3_4, conv4_4 and conv5_4
  # would be dropped: a different network, not a smaller file.
  body = b''.join(_layer(name, [_blob(p['kernel']), _blob(p['bias'])])
                  for name, p in _caffe_weights('vgg19').items())
  path = tmp_path / 'vgg19.caffemodel'
  path.write_bytes(body)
  with pytest.raises(UserError, match=r'holds conv3_4, conv4_4, conv5_4, '
                     r'which a vgg16 lacks; is it a vgg19\?'):
    convert.from_caffemodel(path, 'vgg16')
  assert set(convert.from_caffemodel(path, 'vgg19')['params']) == set(
      vgg.conv_names('vgg19'))
  # A VGG-16 read as the I2V network: named as the VGG-16 it is.
  path16 = tmp_path / 'vgg16.caffemodel'
  path16.write_bytes(b''.join(
      _layer(name, [_blob(p['kernel']), _blob(p['bias'])])
      for name, p in _caffe_weights('vgg16').items()))
  with pytest.raises(UserError, match=r'which a i2v lacks; is it a vgg16\?'):
    convert.from_caffemodel(path16, 'i2v')
