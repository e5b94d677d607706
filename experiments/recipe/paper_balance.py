"""What the paper's alpha/beta means in relative terms, per painting and size.

  python experiments/recipe/paper_balance.py --content tubingen.jpg \\
      --style starry_night.jpg shipwreck.jpg ... [--sizes 256 512]

With the paper's formulas (``loss_scaling='paper'``) the total loss is
alpha * L_content + beta * sum_l w_l E_l. Dividing every term by its value
for all-zero features (C0 for the content, S0_l for style layer l: the
factors of ``loss_scaling='relative'``) gives

  alpha * C0 * [ relative content + (beta / alpha) * sum_l w_l (S0_l / C0)
                 * relative style_l ]

so at the paper's ratio beta/alpha = r, layer l's style weight relative to
the content is r * w_l * S0_l / C0: the number configs/default.py sets
directly (style_weight times the layer's weight). This prints it per layer
for the configs/paper.py network (normalised VGG-19, average pooling) at each
size, and the ratio r that would give the default's total relative style
weight. Forward passes only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from configs import default, paper  # noqa: E402
from nst import backend  # noqa: E402
from nst import targets as nst_targets  # noqa: E402
from nst import vgg, weights  # noqa: E402
from nst.errors import UserError  # noqa: E402


def balance(config, params, content: str, style: str, size: int):
  """(relative weight per style layer at beta/alpha = 1, content C0)."""
  config.content_image, config.style_image = content, style
  config.image_size = size
  config.loss_scaling = 'relative'
  model = vgg.VGG(network=config.network, pooling=config.pooling)
  inputs = nst_targets.load_inputs(config, size)
  targets = nst_targets.make_targets(config, model, params, inputs)
  (layer,) = config.content_layers  # configs/paper.py: relu4_2 alone
  c0 = 1.0 / float(targets.terms['content']['weights'][layer])
  per_layer = {l: float(targets.terms['style']['weights'][l]) /
               float(targets.terms['style']['targets'][l]['scale']) / c0
               for l in config.style_layers}
  return per_layer, c0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--content', required=True)
  parser.add_argument('--style', nargs='+', required=True)
  parser.add_argument('--sizes', nargs='+', type=int, default=[256, 512])
  parser.add_argument('--ratio', type=float, default=1e3,
                      help='beta/alpha to report (paper: 1e3 and 1e4)')
  args = parser.parse_args(argv)
  config = paper.get_config()
  ref = default.get_config()
  ref_total = ref.style_weight * sum(ref.style_layer_weights) / (
      ref.content_weight)
  try:
    params = weights.load(config.weights, config.network)
    print(f'relative style weight per layer at beta/alpha = {args.ratio:g} '
          f'(configs/default.py: {ref_total:.3g} in all); the beta/alpha '
          'that would match it')
    for style in args.style:
      for size in args.sizes:
        per_layer, _ = balance(config, params, args.content, style, size)
        total = args.ratio * sum(per_layer.values())
        match = ref_total / sum(per_layer.values())
        print(f'{Path(style).name:22s} {size:5d} px  ' + ' '.join(
            f'{l} {args.ratio * v:8.2g}' for l, v in per_layer.items())
              + f'  total {total:8.2g}  beta/alpha {match:8.3g}')
  except (UserError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
