"""Does a config's alpha/beta mean the same at every size? One image, scored.

  python experiments/recipe/scaling_table.py --content photo.jpg --style painting.jpg \\
      --image output.png [--sizes 128 256 512] [--config configs/default.py]

Resizes ``--image`` (a stylised output, or any image) to each size and
computes the weighted content term (alpha * L_content) and style term
(beta * L_style) of the config's objective against the photo and painting
at that size, with ``loss_scaling='relative'`` and ``'paper'``. The same
picture at another size should keep its balance, style term over content
term; the last column is that ratio over the one at the first size (1 =
the weights mean the same there).
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax.numpy as jnp  # noqa: E402

from nst import backend  # noqa: E402
from nst import images, step, vgg, weights  # noqa: E402
from nst import targets as nst_targets  # noqa: E402
from nst.errors import UserError  # noqa: E402


def terms(config, params, image_path: str, size: int, scaling: str):
  """(alpha * L_content, beta * L_style) of the image at ``size``."""
  config.image_size, config.loss_scaling = size, scaling
  model = vgg.VGG(network=config.network, pooling=config.pooling)
  inputs = nst_targets.load_inputs(config, size)
  targets = nst_targets.make_targets(config, model, params, inputs)
  image = nst_targets.resize_image(images.load(image_path, size),
                                   inputs.content.shape)
  _, parts = step.objective(model, nst_targets.forward_params(params),
                            targets, jnp.asarray(image))
  return (float(targets.weights['content'] * parts['content']),
          float(targets.weights['style'] * parts['style']))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--content', required=True)
  parser.add_argument('--style', required=True)
  parser.add_argument('--image', required=True)
  parser.add_argument('--sizes', nargs='+', type=int, default=[128, 256, 512])
  parser.add_argument('--config', default=str(
      Path(__file__).resolve().parents[2] / 'configs' / 'default.py'))
  args = parser.parse_args(argv)
  try:
    config = runpy.run_path(args.config)['get_config']()
    config.content_image, config.style_image = args.content, args.style
    params = weights.load(config.weights, config.network)
    print(f'{"scaling":9s} {"size":>5s} {"alpha*content":>14s} '
          f'{"beta*style":>12s} {"style/content":>14s} {"vs first":>9s}')
    for scaling in ('relative', 'paper'):
      first = None
      for size in args.sizes:
        c, s = terms(config, params, args.image, size, scaling)
        first = first or s / c
        print(f'{scaling:9s} {size:5d} {c:14.4g} {s:12.4g} {s / c:14.4g} '
              f'{s / c / first:9.3f}')
  except (UserError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
