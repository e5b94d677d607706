"""Lays images out in one row at a common height, for READMEs and reports.

  python scripts/side_by_side.py OUT.png IMAGE [IMAGE ...] [--height 256]

Each IMAGE is a path or a builtin name (``skimage:chelsea``, ``nst:swirls``).
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from PIL import Image

from nst import backend
from nst import images
from nst.errors import UserError


def side_by_side(sources, height: int, gap: int = 8) -> np.ndarray:
  tiles = []
  for src in sources:
    rgb = images.read_rgb(src)
    h, w = rgb.shape[:2]
    tiles.append(images.resize_to(rgb, height, max(1, round(w * height / h))))
  width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
  canvas = np.full((height, width, 3), 255, np.uint8)
  x = 0
  for t in tiles:
    canvas[:, x:x + t.shape[1]] = t
    x += t.shape[1] + gap
  return canvas


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('out')
  parser.add_argument('sources', nargs='+')
  parser.add_argument('--height', type=int, default=256)
  args = parser.parse_args(argv)
  try:
    canvas = side_by_side(args.sources, args.height)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  buf = io.BytesIO()
  Image.fromarray(canvas).save(buf, format='PNG')
  images.write_atomic(args.out, buf.getvalue())
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
