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
    relu5_1 of |G_out - G_style| / |G_style| (Frobenius norms).

Prints a table with one row per output, the per-layer style errors and, for
scale, a row for the content photo itself. ``--csv`` also writes it as CSV.
``--weights`` takes the config's ``weights`` values (default: the pretrained
VGG-19, which is what the measure is defined on).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nst import images, vgg, weights  # noqa: E402
from nst.errors import UserError  # noqa: E402

CONTENT_LAYER = 'relu4_2'
STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
PHOTO = '(the photo itself)'


def gram_per_position(features: jnp.ndarray) -> jnp.ndarray:
  """G = F^T F / (H*W) of (H, W, C) features."""
  f = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
  return f.T @ f / f.shape[0]


def relative_error(x: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """|x - target| / |target| (Frobenius)."""
  return jnp.linalg.norm(x - target) / jnp.linalg.norm(target)


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
               params=None):
    self.size = size
    self.model = vgg.VGG(network='vgg19', pooling='max')
    self.params = params if params is not None else weights.load('', 'vgg19')
    layers = (CONTENT_LAYER,) + STYLE_LAYERS
    self._features = jax.jit(
        lambda p, x: {k: v[0] for k, v in self.model.apply(
            p, x[None], layers).items()})
    content_rgb = images.resize(images.read_rgb(content), size)
    self.shape = content_rgb.shape
    self.content = self.features(content_rgb)
    style_feats = self.features(images.resize(images.read_rgb(style), size))
    self.style = {l: gram_per_position(style_feats[l]) for l in STYLE_LAYERS}
    self.photo = errors(self.content, self.content, self.style)

  def features(self, rgb: np.ndarray):
    return self._features(self.params, jnp.asarray(images.preprocess(rgb)))

  def __call__(self, output: str | np.ndarray) -> dict[str, float]:
    """The errors of an output (a path or an RGB uint8 array)."""
    rgb = images.read_rgb(output) if isinstance(output, str) else output
    rgb = images.resize(rgb, self.size)
    if rgb.shape != self.shape:
      rgb = images.resize_to(rgb, *self.shape[:2])
    return errors(self.features(rgb), self.content, self.style)


COLUMNS = ('content', 'style') + STYLE_LAYERS


def table(rows: dict[str, dict[str, float]]) -> str:
  width = max(len(n) for n in rows)
  lines = [f'{"output":{width}s}  ' + '  '.join(f'{c:>7s}' for c in COLUMNS)]
  for name, row in rows.items():
    lines.append(f'{name:{width}s}  ' + '  '.join(f'{row[c]:7.3f}'
                                                   for c in COLUMNS))
  return '\n'.join(lines)


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
  args = parser.parse_args(argv)
  try:
    if args.size < vgg.min_size((CONTENT_LAYER,) + STYLE_LAYERS):
      raise UserError(f'--size {args.size} is too small for relu5_1; '
                      f'accepted: >= {vgg.min_size(STYLE_LAYERS)}')
    evaluator = Evaluator(args.content, args.style, args.size,
                          weights.load(args.weights, 'vgg19'))
    rows = {out: evaluator(out) for out in args.outputs}
    rows[PHOTO] = evaluator.photo
    print(table(rows))
    if args.csv:
      with open(args.csv, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(('output',) + COLUMNS)
        for name, row in rows.items():
          writer.writerow((name,) + tuple(f'{row[c]:.6g}' for c in COLUMNS))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except OSError as e:
    print(f'error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
