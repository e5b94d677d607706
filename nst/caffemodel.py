"""Reads the parameter blobs of a Caffe ``.caffemodel`` (a NetParameter).

The original VGG-16/19, the paper's normalised VGG-19 and illustration2vec
are distributed as Caffe models. Only the few messages that carry weights are
declared here (field numbers as in Caffe's ``caffe.proto``): NetParameter
with its current ``layer`` list (LayerParameter) and the deprecated
``layers`` list (V1LayerParameter, which may wrap a V0LayerParameter), and
BlobProto with its shape (BlobShape or the legacy num/channels/height/width).
Every other field is skipped. A caffemodel is plain data, so reading one
cannot run code.

Needs the ``protobuf`` package (``pip install 'nst[convert]'``); nothing else
in ``nst`` imports this module.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from nst.errors import UserError

_F = None  # google.protobuf.descriptor_pb2.FieldDescriptorProto, once loaded


def _field(message, name, number, kind, repeated=False, type_name=''):
  f = message.field.add(name=name, number=number, type=kind,
                        label=_F.LABEL_REPEATED if repeated
                        else _F.LABEL_OPTIONAL)
  if type_name:
    f.type_name = type_name


@functools.cache
def net_parameter():
  """The NetParameter message class (a subset of Caffe's)."""
  global _F
  try:
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf import message_factory
  except ImportError:
    raise UserError('reading .caffemodel files needs protobuf: '
                    "pip install protobuf (or 'nst[convert]')") from None
  _F = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(
      name='nst_caffe_subset.proto', package='nst_caffe', syntax='proto2')
  shape = proto.message_type.add(name='BlobShape')
  _field(shape, 'dim', 1, _F.TYPE_INT64, repeated=True)
  blob = proto.message_type.add(name='BlobProto')
  _field(blob, 'num', 1, _F.TYPE_INT64)
  _field(blob, 'channels', 2, _F.TYPE_INT64)
  _field(blob, 'height', 3, _F.TYPE_INT64)
  _field(blob, 'width', 4, _F.TYPE_INT64)
  _field(blob, 'data', 5, _F.TYPE_FLOAT, repeated=True)
  _field(blob, 'shape', 7, _F.TYPE_MESSAGE, type_name='.nst_caffe.BlobShape')
  _field(blob, 'double_data', 8, _F.TYPE_DOUBLE, repeated=True)
  v0 = proto.message_type.add(name='V0LayerParameter')
  _field(v0, 'name', 1, _F.TYPE_STRING)
  _field(v0, 'blobs', 50, _F.TYPE_MESSAGE, repeated=True,
         type_name='.nst_caffe.BlobProto')
  v1 = proto.message_type.add(name='V1LayerParameter')
  _field(v1, 'layer', 1, _F.TYPE_MESSAGE,
         type_name='.nst_caffe.V0LayerParameter')
  _field(v1, 'name', 4, _F.TYPE_STRING)
  _field(v1, 'blobs', 6, _F.TYPE_MESSAGE, repeated=True,
         type_name='.nst_caffe.BlobProto')
  layer = proto.message_type.add(name='LayerParameter')
  _field(layer, 'name', 1, _F.TYPE_STRING)
  _field(layer, 'type', 2, _F.TYPE_STRING)
  _field(layer, 'blobs', 7, _F.TYPE_MESSAGE, repeated=True,
         type_name='.nst_caffe.BlobProto')
  net = proto.message_type.add(name='NetParameter')
  _field(net, 'name', 1, _F.TYPE_STRING)
  _field(net, 'layers', 2, _F.TYPE_MESSAGE, repeated=True,
         type_name='.nst_caffe.V1LayerParameter')
  _field(net, 'layer', 100, _F.TYPE_MESSAGE, repeated=True,
         type_name='.nst_caffe.LayerParameter')
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName('nst_caffe.NetParameter'))


def _array(blob, where: str) -> np.ndarray:
  values = np.asarray(blob.data if len(blob.data) else blob.double_data,
                      np.float32)
  if len(blob.shape.dim):
    shape = tuple(blob.shape.dim)
  else:  # legacy 4-D blob
    shape = (blob.num, blob.channels, blob.height, blob.width)
  if int(np.prod(shape)) != values.size:
    raise UserError(f'{where}: blob of shape {shape} holds {values.size} '
                    'values')
  return values.reshape(shape)


def read(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
  """``{layer name: [blob arrays]}`` for every layer that has blobs."""
  Net = net_parameter()
  from google.protobuf.message import DecodeError
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise UserError(f'cannot read {path}: {e.strerror}') from None
  net = Net()
  try:
    net.ParseFromString(data)
  except DecodeError as e:
    raise UserError(f'{path} is not a Caffe model (protobuf: {e})') from None
  layers = [(l.name, l.blobs) for l in net.layer]
  for l in net.layers:
    if len(l.blobs) or not l.HasField('layer'):
      layers.append((l.name, l.blobs))
    else:  # V0 layer inside a V1 one
      layers.append((l.layer.name, l.layer.blobs))
  out = {}
  for name, blobs in layers:
    if len(blobs):
      out[name] = [_array(b, f'{path}: layer {name}') for b in blobs]
  if not out:
    raise UserError(f'{path} holds no layer with parameters; is it a '
                    '.caffemodel (not a .prototxt)?')
  return out
