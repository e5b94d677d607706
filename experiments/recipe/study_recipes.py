"""Which recipe paints a user's photo best with no tuning? Recipes x pairs.

  python scripts/fetch_paper_images.py          # data/paper/
  python experiments/recipe/study_recipes.py --images data/paper --size 256 \\
      --out runs/recipes [--recipes default lbfgs ...] [--pairs ...]

Runs every recipe of ``RECIPES`` (overrides of configs/default.py) on every
photo x painting pair of ``PAIRS`` at ``--size`` px and scores each output
with the measure of scripts/evaluate.py at the same size (content error,
style error; lower is better on both). The photos are scikit-image's
bundled ones and the Tuebingen photo, the styles the paper's paintings (from
``--images``) and the generated ``nst:swirls``.

Each run is timed whole, as a user's run is: reading the images, the targets,
compiling (JAX's caches are cleared before each run) and the steps; the
weights are loaded once. Writes ``--out/PAIR/RECIPE.png``, appends one row per
run to ``--out/results.csv`` (a rerun skips the rows already there), and
prints per run and per recipe: content and style error, the style error over
the photo's own, and the wall time. ``--out/PAIR.png`` is a contact sheet:
content, style, then each recipe's output.
"""
from __future__ import annotations

import argparse
import csv
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / 'scripts')]

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from configs import default  # noqa: E402
from nst import backend  # noqa: E402
from nst import engine, images, step, weights  # noqa: E402
from nst.errors import UserError  # noqa: E402
import evaluate  # noqa: E402  (scripts/evaluate.py)

# name -> (content, style); 'images:' names a file of --images.
PAIRS = {
    'tubingen-shipwreck': ('images:tubingen.jpg', 'images:shipwreck.jpg'),
    'tubingen-starry': ('images:tubingen.jpg', 'images:starry_night.jpg'),
    'tubingen-scream': ('images:tubingen.jpg', 'images:the_scream.jpg'),
    'tubingen-nude': ('images:tubingen.jpg', 'images:seated-nude.jpg'),
    'astronaut-starry': ('skimage:astronaut', 'images:starry_night.jpg'),
    'astronaut-nude': ('skimage:astronaut', 'images:seated-nude.jpg'),
    'chelsea-swirls': ('skimage:chelsea', 'nst:swirls'),
    'chelsea-scream': ('skimage:chelsea', 'images:the_scream.jpg'),
    'coffee-shipwreck': ('skimage:coffee', 'images:shipwreck.jpg'),
    'coffee-swirls': ('skimage:coffee', 'nst:swirls'),
    'rocket-starry': ('skimage:rocket', 'images:starry_night.jpg'),
    'rocket-scream': ('skimage:rocket', 'images:the_scream.jpg'),
    # Portraits as the style (faces, eyes, figures: what must not be pasted).
    'tubingen-astronaut': ('images:tubingen.jpg', 'skimage:astronaut'),
    'tubingen-chelsea': ('images:tubingen.jpg', 'skimage:chelsea'),
    'coffee-astronaut': ('skimage:coffee', 'skimage:astronaut'),
    'rocket-chelsea': ('skimage:rocket', 'skimage:chelsea'),
    'rocket-nude': ('skimage:rocket', 'images:seated-nude.jpg'),
    'coffee-scream': ('skimage:coffee', 'images:the_scream.jpg'),
}

# name -> overrides of configs/default.py (the recommended recipe: L-BFGS
# with the range penalty, coarse to fine at 1/4, 1/2 and 1 of the size,
# relu layers with relu4_1 weighted up, relative loss scaling).
RECIPES = {
    'default': {},
    # What configs/default.py gave before this study: Adam, one scale, the
    # paper's loss formulas, conv layers weighted to even out the plain
    # VGG-19's per-layer scales, beta tuned for 256 px.
    'before': {'loss_scaling': 'paper', 'optimizer': 'adam',
               'content_layers': ('conv4_2',),
               'style_layers': ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1',
                                'conv5_1'),
               'style_layer_weights': (1.0, 2e-3, 5e-4, 3e-6, 5e-4),
               'style_weight': 1e5, 'num_steps': 300, 'scales': (),
               'scale_steps': ()},
    # One lever of the default changed at a time:
    'adam': {'optimizer': 'adam'},                  # projected Adam
    'zoom': {'optimizer': 'lbfgs_zoom'},            # L-BFGS, line search
    'one-scale': {'scales': (), 'scale_steps': (), 'num_steps': 140},
    'equal-layers': {'style_layer_weights': (), 'style_weight': 11.6},
    'no-range': {'clip_pixels': False},             # unconstrained L-BFGS
    'mean-cov': {'style_loss': 'mean_cov'},
    'tv': {'tv_weight': 0.1},
    'noise-init': {'init': 'noise'},
    # The default before the no-copy study (experiments/no_copy).
    'previous': {'style_weight': 1.25,
                 'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 0.25),
                 'style_layer_trims': ()},
    # Levers against pasted parts of the painting (experiments/no_copy):
    'no-relu5': {'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 0.0)},
    'deep-content': {'content_layers': ('relu4_2', 'relu5_2')},
    'relu5-0.05': {'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 0.05)},
    'relu5-0.1': {'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 0.1)},
    'shallow-up': {'style_layer_weights': (2.0, 2.0, 2.0, 6.0, 0.05)},
    'strong-0.025': {'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 0.025),
                     'style_weight': 2.5},
    'relu4-half': {'style_layer_weights': (1.0, 1.0, 1.0, 3.0, 0.025),
                   'style_weight': 2.5},
    'relu4-half-scale1.5': {
        'style_layer_weights': (1.0, 1.0, 1.0, 3.0, 0.025),
        'style_weight': 2.5, 'style_scale': 1.5},
    'trim': {'style_layer_weights': (1.0, 1.0, 1.0, 3.0, 0.025),
             'style_weight': 2.5,
             'style_layer_trims': (0.0, 0.0, 0.0, 0.1, 0.1)},
    'trim-r5': {'style_layer_weights': (1.0, 1.0, 1.0, 3.0, 0.125),
                'style_weight': 2.5,
                'style_layer_trims': (0.0, 0.0, 0.0, 0.1, 0.1)},
    'trim5': {'style_layer_weights': (1.0, 1.0, 1.0, 4.0, 0.025),
              'style_weight': 2.5,
              'style_layer_trims': (0.0, 0.0, 0.0, 0.05, 0.1)},
    # Against the style error the trims give up (experiments/no_copy):
    'strong-3.5': {'style_weight': 3.5},
    'steps-140': {'num_steps': 140},
    'sw2.5-70': {'num_steps': 70, 'style_weight': 2.5},
    'steps-140-sw3-trim10': {'num_steps': 140, 'style_weight': 3.0,
                             'style_layer_trims': (0.0, 0.0, 0.0, 0.1, 0.1)},
    'steps-200-sw3': {'num_steps': 200, 'style_weight': 3.0},
    'steps-140-sw3': {'num_steps': 140, 'style_weight': 3.0},
    # Against the painting's layout copied at a coarse scale whose deep maps
    # are a few positions across (64 px of a 256 px run):
    'no-64': {'scales': (0.5,), 'scale_steps': (150,)},
    'no-64-300': {'scales': (0.5,), 'scale_steps': (300,)},
    # The style error relu5_1 gives up, won back on the shallow layers
    # (shallow-4: the default since; shallow-1: the default before):
    'shallow-1': {'style_layer_weights': (1.0, 1.0, 1.0, 4.0, 0.025)},
    'shallow-2': {'style_layer_weights': (2.0, 2.0, 2.0, 4.0, 0.025)},
    'shallow-4': {'style_layer_weights': (4.0, 4.0, 4.0, 4.0, 0.025)},
    # The painting read smaller / larger than the output (all layers):
    'style-0.8': {'style_scale': 0.8},
    'style-1.25': {'style_scale': 1.25},
    'mean5': {'style_layer_losses': ('gram', 'gram', 'gram', 'gram', 'mean'),
              'style_layer_weights': (1.0, 1.0, 1.0, 6.0, 1.0)},
}

def source(spec: str, folder: Path) -> str:
  return str(folder / spec[len('images:'):]) if spec.startswith(
      'images:') else spec


def recipe_config(name: str, content: str, style: str, size: int):
  c = default.get_config()
  c.content_image, c.style_image, c.image_size = content, style, size
  c.log_every = c.save_every = c.checkpoint_every = 0
  for k, v in RECIPES[name].items():
    c[k] = v
  return c


def run_one(config, params) -> tuple[np.ndarray, float]:
  """The output (RGB uint8) and the wall time of one run, from cold caches."""
  jax.clear_caches()
  step.clear_cache()
  engine.compiled.cache_clear()
  start = time.perf_counter()
  image, _ = engine.stylize(config, params=params)
  image = images.deprocess(image)  # waits for the result
  return image, time.perf_counter() - start


FIELDS = ('pair', 'recipe', 'size', 'content', 'style', 'photo_style',
          'wall_s') + evaluate.STYLE_LAYERS + ('copy', 'copy_x', 'copy_y')


def sheet(out: Path, pair: str, content: str, style: str, recipes, size):
  """content | style | each recipe's output, 256 px high."""
  tiles = [images.resize(images.read_rgb(s), size) for s in (content, style)]
  tiles += [np.asarray(Image.open(out / pair / f'{r}.png').convert('RGB'))
            for r in recipes if (out / pair / f'{r}.png').is_file()]
  h = 256
  tiles = [Image.fromarray(t).resize((max(1, round(t.shape[1] * h /
                                                   t.shape[0])), h))
           for t in tiles]
  canvas = Image.new('RGB', (sum(t.width for t in tiles), h), 'white')
  x = 0
  for t in tiles:
    canvas.paste(t, (x, 0))
    x += t.width
  canvas.save(out / f'{pair}.png')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', default='data/paper',
                      help='folder holding the paintings and tubingen.jpg')
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--out', required=True)
  parser.add_argument('--recipes', nargs='+', choices=list(RECIPES),
                      default=list(RECIPES))
  parser.add_argument('--pairs', nargs='+', choices=list(PAIRS),
                      default=list(PAIRS))
  args = parser.parse_args(argv)
  try:
    return study(args)
  except (UserError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


def study(args) -> int:
  folder, out = Path(args.images), Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  table = out / 'results.csv'
  rows = list(csv.DictReader(table.open())) if table.is_file() else []
  done = {(r['pair'], r['recipe'], int(r['size'])) for r in rows}
  params = weights.load('', 'vgg19')
  evaluators = functools.cache(
      lambda c, s: evaluate.Evaluator(c, s, args.size, params))
  with table.open('a', newline='') as f:
    writer = csv.DictWriter(f, FIELDS)
    if not rows:
      writer.writeheader()
    for pair in args.pairs:
      content, style = (source(s, folder) for s in PAIRS[pair])
      score = evaluators(content, style)
      for name in args.recipes:
        if (pair, name, args.size) in done:
          continue
        config = recipe_config(name, content, style, args.size)
        image, wall = run_one(config, params)
        (out / pair).mkdir(exist_ok=True)
        Image.fromarray(image).save(out / pair / f'{name}.png')
        e = score(image)
        row = {'pair': pair, 'recipe': name, 'size': args.size,
               'content': f'{e["content"]:.4f}', 'style': f'{e["style"]:.4f}',
               'photo_style': f'{score.photo["style"]:.4f}',
               'wall_s': f'{wall:.1f}',
               **{l: f'{e[l]:.4f}' for l in evaluate.STYLE_LAYERS},
               'copy': f'{e["copy"]:.4f}', 'copy_x': e['copy_x'],
               'copy_y': e['copy_y']}
        writer.writerow(row)
        f.flush()
        rows.append(row)
        print(f'{pair:20s} {name:16s} content {e["content"]:.3f} style '
              f'{e["style"]:.3f} ({e["style"] / score.photo["style"]:.2f} of '
              f'the photo\'s) relu4_1 {e["relu4_1"]:.3f} relu5_1 '
              f'{e["relu5_1"]:.3f} copy {e["copy"]:.3f} at '
              f'({e["copy_x"]}, {e["copy_y"]})  {wall:.1f} s', flush=True)
      sheet(out, pair, content, style, args.recipes, args.size)
  print('\nper recipe, over the pairs at this size: mean content, mean style, '
        'worst style / photo\'s, mean wall s')
  for name in args.recipes:
    mine = [r for r in rows if r['recipe'] == name and
            int(r['size']) == args.size and r['pair'] in args.pairs]
    if not mine:
      continue
    col = lambda k: np.array([float(r[k]) for r in mine])
    print(f'{name:16s} {col("content").mean():.3f} {col("style").mean():.3f} '
          f'{(col("style") / col("photo_style")).max():.2f} '
          f'{col("wall_s").mean():.1f}  ({len(mine)} pairs)')
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
