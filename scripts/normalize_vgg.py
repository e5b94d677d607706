"""Normalises a VGG as in Gatys et al. (2015): mean activation one per filter.

  python scripts/normalize_vgg.py OUT.npz [--weights ''] [--network vgg19]
      [--images IMAGE_OR_FOLDER ...] [--size 224] [--pooling avg]
      [--floor 0.01]

The means are measured over IMAGEs (paths, folders of images, or builtin names
such as ``skimage:astronaut``; default: the photos bundled with
scikit-image), each centre-cropped and resized to SIZE x SIZE px, with POOLING
between blocks; a mean below FLOOR x its layer's median counts as that
(0: the strict rule). The network's function changes only by a positive scale per
channel at each layer (see ``nst/normalize.py``). Use the result with
``--config.weights=OUT.npz``; ``--config.weights=normalized`` is this script's
default output for the pretrained VGG-19, computed and cached automatically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nst import backend
from nst import images, normalize, vgg, weights
from nst.errors import UserError


def expand(specs):
  """Folders become the image files in them (sorted)."""
  out = []
  for spec in specs:
    path = Path(spec).expanduser()
    if not images.is_builtin(spec) and path.is_dir():
      out += images.folder_images(path)
    else:
      out.append(spec)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('output', type=Path)
  parser.add_argument('--weights', default='',
                      help="'' (pretrained VGG-19), 'random' or a .npz")
  parser.add_argument('--network', choices=vgg.NETWORKS, default='vgg19')
  parser.add_argument('--images', nargs='+',
                      default=list(normalize.DEFAULT_IMAGES))
  parser.add_argument('--size', type=int, default=normalize.DEFAULT_SIZE)
  parser.add_argument('--pooling', choices=vgg.POOLINGS,
                      default=normalize.DEFAULT_POOLING)
  parser.add_argument('--floor', type=float, default=normalize.DEFAULT_FLOOR)
  args = parser.parse_args(argv)
  try:
    if args.output.suffix != '.npz':
      raise UserError(f'output {str(args.output)!r} must end in .npz')
    if not 0 <= args.floor < 1:
      raise UserError(f'--floor {args.floor} is outside [0, 1)')
    if args.size < 32:
      raise UserError(f'--size {args.size} is too small; the network needs '
                      'at least 32 px')
    specs = expand(args.images)
    params = weights.load(args.weights, args.network)
    normed, means = normalize.normalize(params, args.network, specs,
                                        args.size, args.pooling, args.floor)
    weights.save_params(args.output, normed)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{len(specs)} images at {args.size} px, {args.pooling} pooling')
  print(f'mean activation per filter before normalising; "floored": below '
        f'{args.floor} x the median')
  print(f'{"layer":8} {"min":>10} {"median":>10} {"max":>10} {"floored":>8}')
  for name, m in means.items():
    floored = int((m < args.floor * np.median(m)).sum())
    print(f'{name:8} {m.min():10.3g} {np.median(m):10.3g} {m.max():10.3g} '
          f'{floored:8d}')
  print(f'wrote {args.output}')
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
