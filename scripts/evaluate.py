"""Scale-free content and style errors of outputs against one content and one
style image: a point on the (content, style) plane per output.

  python scripts/evaluate.py --content photo.jpg --style painting.jpg \\
      out1.png out2.png ... [--size 512] [--csv scores.csv]

The measure (lower is better on both axes):
  - the pretrained VGG-19 (the project's default weights, not normalised),
    max pooling, the library's Caffe pixel convention;
  - each image is read as RGB and resized (Lanczos) so that its longer side
    is ``--size`` px; an output whose shape then differs from the content's
    is resized to the content's exact shape;
  - features are ReLU outputs, F of shape (H*W, C); the Gram matrix per
    position is G = F^T F / (H*W);
  - content error = |F_out - F_content| / |F_content| at relu4_2;
  - style error = the mean over relu1_1, relu2_1, relu3_1, relu4_1 and
    relu5_1 of |G_out - G_style| / |G_style| (Frobenius norms);
  - copy score (a piece of the painting pasted into the output, such as an
    eye or a face; lower is better): the relu5_1 maps of the output and the
    style without their outermost ring of positions (zero padding makes
    border features alike); for each output position, the cosine similarity
    of its feature vector to the most similar one of the style's; the score
    is the largest over the output's positions, and ``copy_x``/``copy_y``
    where it is, in the output file's own pixels (the centre of that
    position's 16 px cell): where to look. It guards, it is no target: an
    output barely stylised scores low too.

Prints a table with one row per output, the per-layer style errors and, for
scale, a row for the content photo itself. ``--csv`` also writes it as CSV.
``--weights`` takes the config's ``weights`` values (default: the pretrained
VGG-19, which is what the measure is defined on).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nst import backend  # noqa: E402
from nst import images, memory, vgg, weights  # noqa: E402
from nst.errors import UserError  # noqa: E402

CONTENT_LAYER = 'relu4_2'
STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
COPY_LAYER = 'relu5_1'
COPY_STRIDE = 16  # input pixels per relu5_1 position
PHOTO = '(the photo itself)'


def gram_per_position(features: jnp.ndarray) -> jnp.ndarray:
  """G = F^T F / (H*W) of (H, W, C) features."""
  f = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
  return f.T @ f / f.shape[0]


def relative_error(x: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """|x - target| / |target| (Frobenius)."""
  return jnp.linalg.norm(x - target) / jnp.linalg.norm(target)


def inner(features: jnp.ndarray) -> jnp.ndarray:
  """(H, W, C) features without their outermost ring of positions."""
  return features[1:-1, 1:-1]


def copy_similarity(out_features: jnp.ndarray,
                    style_features: jnp.ndarray) -> jnp.ndarray:
  """(H, W): for each position of ``out_features`` (H, W, C), the largest
  cosine similarity of its feature vector to any of ``style_features``'
  (h, w, C) positions. A position of zeros is similar to nothing (0)."""
  unit = lambda f: f / jnp.maximum(
      jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
  o = unit(out_features.astype(jnp.float32))
  s = unit(style_features.astype(jnp.float32)).reshape(
      -1, style_features.shape[-1])
  return jnp.max(jnp.einsum('hwc,nc->hwn', o, s), axis=-1)


def copy_score(out_features: jnp.ndarray, style_features: jnp.ndarray
               ) -> tuple[float, int, int]:
  """The copy score of relu5_1 maps (borders included: ``inner`` is the
  caller's) and where it is: (score, row, column) in the positions of
  ``out_features``."""
  sim = np.asarray(copy_similarity(out_features, style_features))
  row, col = np.unravel_index(int(np.argmax(sim)), sim.shape)
  return float(sim[row, col]), int(row), int(col)


def errors(out_feats, content_feats, style_grams) -> dict[str, float]:
  """The content error, the style error and each layer's style error of
  one output's features against the content's features and style's Grams."""
  row = {'content': float(relative_error(out_feats[CONTENT_LAYER],
                                         content_feats[CONTENT_LAYER]))}
  per_layer = {l: float(relative_error(gram_per_position(out_feats[l]),
                                       style_grams[l])) for l in STYLE_LAYERS}
  row['style'] = float(np.mean(list(per_layer.values())))
  row.update(per_layer)
  return row


class Evaluator:
  """The measure for one content and one style image at one size."""

  def __init__(self, content: str, style: str, size: int = 512,
               params=None, max_pixels: int = images.DEFAULT_MAX_PIXELS):
    self.size, self.max_pixels = size, max_pixels
    self.model = vgg.VGG(network='vgg19', pooling='max')
    self.params = params if params is not None else weights.load('', 'vgg19')
    layers = (CONTENT_LAYER,) + STYLE_LAYERS
    self._features = jax.jit(
        lambda p, x: {k: v[0] for k, v in self.model.apply(
            p, x[None], layers).items()})
    content_rgb = images.resize(self.read(content), size)
    self.shape = content_rgb.shape
    self.content = self.features(content_rgb)
    style_feats = self.features(images.resize(self.read(style), size))
    self.style = {l: gram_per_position(style_feats[l]) for l in STYLE_LAYERS}
    self.style_copy = inner(style_feats[COPY_LAYER])
    for name, f in (('content', self.content[COPY_LAYER]),
                    ('style', style_feats[COPY_LAYER])):
      if min(inner(f).shape[:2]) < 1:
        raise UserError(
            f'at --size {size} the {name} image\'s {COPY_LAYER} map is '
            f'{f.shape[1]}x{f.shape[0]}, nothing inside its outer ring for '
            f'the copy score; accepted: a size at which both images\' '
            f'shorter sides are >= {3 * COPY_STRIDE} px')
    self.photo = self._score(self.content, self.shape)

  def read(self, spec: str) -> np.ndarray:
    return images.read_rgb(spec, max_pixels=self.max_pixels)

  def features(self, rgb: np.ndarray):
    return self._features(self.params, jnp.asarray(images.preprocess(rgb)))

  def __call__(self, output: str | np.ndarray) -> dict[str, float]:
    """The errors of an output (a path or an RGB uint8 array)."""
    rgb = self.read(output) if isinstance(output, str) else output
    own_shape = rgb.shape
    rgb = images.resize(rgb, self.size)
    if rgb.shape != self.shape:
      rgb = images.resize_to(rgb, *self.shape[:2])
    return self._score(self.features(rgb), own_shape)

  def _score(self, feats, own_shape) -> dict[str, float]:
    """``errors`` and the copy score of features of an image whose file is
    ``own_shape`` (where the copy is, in its pixels)."""
    row = errors(feats, self.content, self.style)
    score, i, j = copy_score(inner(feats[COPY_LAYER]), self.style_copy)
    # Position (i, j) of the inner map is (i + 1, j + 1) of the whole one,
    # the cell of measured pixels [16 (i + 1), 16 (i + 2)).
    centre = lambda k, measured, own: round(
        (COPY_STRIDE * (k + 1.5)) * own / measured)
    row['copy'] = score
    row['copy_y'] = centre(i, self.shape[0], own_shape[0])
    row['copy_x'] = centre(j, self.shape[1], own_shape[1])
    return row


COLUMNS = ('content', 'style') + STYLE_LAYERS + ('copy', 'copy_x', 'copy_y')


def _cell(value) -> str:
  return f'{value:7d}' if isinstance(value, int) else f'{value:7.3f}'


def table(rows: dict[str, dict[str, float]]) -> str:
  width = max(len(n) for n in rows)
  lines = [f'{"output":{width}s}  ' + '  '.join(f'{c:>7s}' for c in COLUMNS)]
  for name, row in rows.items():
    lines.append(f'{name:{width}s}  ' + '  '.join(_cell(row[c])
                                                   for c in COLUMNS))
  return '\n'.join(lines)


def check_size(size: int) -> None:
  """``--size``: large enough for the copy score's inner relu5_1 map, and
  small enough for a forward pass to fit the memory available."""
  if size < 3 * COPY_STRIDE:
    raise UserError(
        f'--size {size}: accepted is at least {3 * COPY_STRIDE} px (the '
        f'copy score needs a {COPY_LAYER} map of 3 positions or more '
        'across each image\'s shorter side)')
  # A square image at most: the forward pass, the content's and one
  # image's features kept beside it, and the copy score's cosines (every
  # inner relu5_1 position of the output against every one of the style).
  inner = max(0, size // COPY_STRIDE - 2) ** 2
  memory.check_free(
      3 * memory.forward_bytes('vgg19', (CONTENT_LAYER,) + STYLE_LAYERS,
                               size, size) + 4 * inner ** 2,
      f'measuring at --size {size}', 'choose a smaller --size (the measure '
      'is defined at 512)')


def csv_text(rows: dict[str, dict[str, float]]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(('output',) + COLUMNS)
  for name, row in rows.items():
    writer.writerow((name,) + tuple(
        str(row[c]) if isinstance(row[c], int) else f'{row[c]:.6g}'
        for c in COLUMNS))
  return buf.getvalue()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description='Content and style errors of outputs (lower is better).')
  parser.add_argument('outputs', nargs='+', help='output images')
  parser.add_argument('--content', required=True, help='the content photo')
  parser.add_argument('--style', required=True, help='the style image')
  parser.add_argument('--size', type=int, default=512,
                      help='longer side every image is resized to (px)')
  parser.add_argument('--csv', default='', help='also write the table here')
  parser.add_argument('--weights', default='',
                      help="the config's weights values: '' (pretrained "
                      "VGG-19, the measure's), a .npz params file, or "
                      "'random' (tests)")
  parser.add_argument('--max-image-pixels', type=int,
                      default=images.DEFAULT_MAX_PIXELS,
                      help='larger input files are refused before decoding')
  args = parser.parse_args(argv)
  try:
    check_size(args.size)
    if args.csv:
      if images.names_any(args.csv, [args.content, args.style,
                                     *args.outputs]):
        raise UserError(f'--csv {args.csv!r} is one of the images it would '
                        'score; name another file')
    for out in args.outputs:  # a bad path now, not after the features
      if images.source_shape(out) is None:
        images.read_rgb(out, max_pixels=args.max_image_pixels)
    evaluator = Evaluator(args.content, args.style, args.size,
                          weights.load(args.weights, 'vgg19'),
                          max_pixels=args.max_image_pixels)
    rows = {out: evaluator(out) for out in args.outputs}
    rows[PHOTO] = evaluator.photo
    print(table(rows))
    if args.csv:
      images.write_atomic(args.csv, csv_text(rows).encode())
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except OSError as e:
    print(f'error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
