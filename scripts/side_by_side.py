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
from nst import images, memory
from nst.errors import UserError

# Bytes per pixel of the row while it is made: the canvas, its PNG
# encoding, and the tile being resized before it is pasted.
BYTES_PER_PX = 3 * 4


def side_by_side(sources, height: int, gap: int = 8,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS) -> np.ndarray:
  if height < 1:
    raise UserError(f'--height {height}: accepted is a whole number of '
                    'pixels >= 1')
  read = lambda src: images.read_rgb(src, max_pixels=max_pixels)
  # The sizes from the files' headers (a file whose header cannot be read
  # is read now, to say why); each image is read again only to be pasted.
  shapes = [images.source_shape(src) or read(src).shape[:2]
            for src in sources]
  widths = [max(1, round(w * height / h)) for h, w in shapes]
  width = sum(widths) + gap * (len(sources) - 1)
  memory.check_free(BYTES_PER_PX * height * width,
                    f'a row {width}x{height} px', 'choose a smaller --height')
  canvas = np.full((height, width, 3), 255, np.uint8)
  x = 0
  for src, w in zip(sources, widths):
    canvas[:, x:x + w] = images.resize_to(read(src), height, w)
    x += w + gap
  return canvas


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('out')
  parser.add_argument('sources', nargs='+')
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--max-image-pixels', type=int,
                      default=images.DEFAULT_MAX_PIXELS,
                      help='larger input files are refused before decoding')
  args = parser.parse_args(argv)
  try:
    if images.names_any(args.out, args.sources):
      raise UserError(f'{args.out!r} is one of the images to lay out; name '
                      'another output file')
    canvas = side_by_side(args.sources, args.height,
                          max_pixels=args.max_image_pixels)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format='PNG')
    images.write_atomic(args.out, buf.getvalue())
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
