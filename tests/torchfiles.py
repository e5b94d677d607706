"""Writes small files in torch.save's formats, without torch, for tests.

Pickling needs the globals ``torch._utils._rebuild_tensor_v2`` and
``torch.<T>Storage`` to exist, so stand-in modules are put into
``sys.modules`` only while a file is written.
"""
import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE = {np.dtype(np.uint8): 'ByteStorage', np.dtype(np.float32):
            'FloatStorage', np.dtype(np.int64): 'LongStorage'}


def sample_state(rng) -> dict:
  """A small state dict of three dtypes and ranks, for round trips."""
  return collections.OrderedDict(
      w=rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
      q=rng.integers(0, 256, (2, 5), dtype=np.uint8),
      b=np.arange(4, dtype=np.float32))


@contextlib.contextmanager
def _fake_torch():
  torch, utils = types.ModuleType('torch'), types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('only pickled, never called')
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in _STORAGE.values():
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))
  torch._utils = utils
  saved = {k: sys.modules.get(k) for k in ('torch', 'torch._utils')}
  sys.modules.update({'torch': torch, 'torch._utils': utils})
  try:
    yield torch
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k)
      else:
        sys.modules[k] = v


class _Pickler(pickle.Pickler):
  """Pickles arrays as torch tensors over persistent-id storages."""

  def __init__(self, file, torch, legacy):
    super().__init__(file, protocol=2)
    self.torch, self.legacy, self.storages = torch, legacy, {}

  def reducer_override(self, obj):
    if not isinstance(obj, np.ndarray):
      return NotImplemented
    arr = np.ascontiguousarray(obj)
    key = str(len(self.storages))
    self.storages[key] = arr
    stride = tuple(s // arr.itemsize for s in arr.strides)
    import collections
    return (self.torch._utils._rebuild_tensor_v2,
            (_StorageRef(key, arr), 0, arr.shape, stride, False,
             collections.OrderedDict()))

  def persistent_id(self, obj):
    if not isinstance(obj, _StorageRef):
      return None
    cls = getattr(self.torch, _STORAGE[obj.array.dtype])
    pid = ('storage', cls, obj.key, 'cpu', obj.array.size)
    return pid + (None,) if self.legacy else pid


class _StorageRef:
  def __init__(self, key, array):
    self.key, self.array = key, array


def save_legacy(path, state: dict, *, payload=None):
  """The pre-1.6 stream: magic, protocol, sys info, pickle, keys, storages.

  ``payload`` replaces the pickled state by raw bytes (for malicious files).
  """
  buf = io.BytesIO()
  for header in (0x1950a86a20f9469cfc6c, 1001,
                 {'protocol_version': 1001, 'little_endian': True,
                  'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
    pickle.dump(header, buf, protocol=2)
  if payload is not None:
    buf.write(payload)
  else:
    with _fake_torch() as torch:
      p = _Pickler(buf, torch, legacy=True)
      p.dump(state)
    pickle.dump(list(p.storages), buf, protocol=2)
    for arr in p.storages.values():
      buf.write(struct.pack('<q', arr.size))
      buf.write(arr.tobytes())
  with open(path, 'wb') as f:
    f.write(buf.getvalue())


def save_zip(path, state: dict):
  """The zip format of torch >= 1.6: archive/data.pkl + archive/data/<key>."""
  buf = io.BytesIO()
  with _fake_torch() as torch:
    p = _Pickler(buf, torch, legacy=False)
    p.dump(state)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
    for key, arr in p.storages.items():
      z.writestr(f'archive/data/{key}', arr.tobytes())
