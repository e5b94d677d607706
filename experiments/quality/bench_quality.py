"""Better image for the same time: losses against wall time, per method.

  python experiments/quality/bench_quality.py --content tubingen.jpg \\
      --style starry_night.jpg --size 512 [--steps 500] [--only adam lbfgs]

Runs one content/style pair with each method of ``METHODS`` -- Adam or
L-BFGS, one scale or coarse to fine (``scales`` = size/4, size/2), with or
without iterate averaging -- on the objective of ``--config`` (default the
paper's: normalised VGG-19, average pooling, content relu4_2, style relu1_1
... relu5_1), all from the same start (``--init``, default the content
photo). ``--style-weight`` defaults to 1e6 * (size / 128)^2: from the photo,
1e6 gives a clearly stylised Tuebingen at 128 px (1e5 a light touch), and
beta grows with the pixel count to keep that balance at larger sizes.

Every ``--every`` steps at the output size, the output image is scored by
one fixed evaluation: the paper's layers and Gram loss on the normalised
VGG-19 at the output size (``EVAL``), whatever the method optimises. The
wall time counts the steps and the per-scale setup (images, targets), not
the scoring, and not compilation: each method runs once untimed for one step
per scale first, and the timed run reuses its compiled step. Prints each
method's curve, then a table at common times: content and style loss, and
each over Adam's at that time (lower is better); the times are a quarter,
half and all of the longest run, and the end of Adam's.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from configs import paper  # noqa: E402
from nst import backend  # noqa: E402
from nst import engine, images, step, targets, vgg, weights  # noqa: E402

# name -> config overrides; {size} parts are filled in per run.
ADAM = {'optimizer': 'adam', 'clip_pixels': True}
LBFGS = {'optimizer': 'lbfgs', 'clip_pixels': False}
METHODS = {
    'adam': ADAM,
    'adam-avg': {**ADAM, 'avg_decay': 0.99},
    'adam-ms': {**ADAM, 'scales': 'coarse'},
    'adam-ms-avg': {**ADAM, 'scales': 'coarse', 'avg_decay': 0.99},
    'lbfgs': LBFGS,
    'lbfgs-ms': {**LBFGS, 'scales': 'coarse'},
}
# The fixed evaluation: the paper's layers, Gram loss, equal style weights.
EVAL = {'weights': 'normalized', 'pooling': 'avg', 'network': 'vgg19',
        'content_layers': ('relu4_2',), 'content_layer_weights': (),
        'style_layers': paper.STYLE_LAYERS, 'style_layer_weights': (),
        'style_loss': 'gram', 'style_masks': '', 'preserve_colour': 'none',
        'style_scale': 1.0, 'style_blend_weights': ()}


def method_config(base, name: str, size: int, steps: int):
  c = ml_collections.ConfigDict(base.to_dict())
  c.image_size, c.num_steps = size, steps
  for k, v in METHODS[name].items():
    if k == 'scales':
      c.scales = (size // 4, size // 2)
      c.scale_steps = (steps, steps)
    else:
      c[k] = v
  return c


class Scorer:
  """The fixed evaluation of an output image (Caffe convention)."""

  def __init__(self, base, size: int):
    self.config = ml_collections.ConfigDict(base.to_dict())
    self.config.update(EVAL)
    self.config.image_size = size
    self.model = vgg.VGG(network='vgg19', pooling='avg')
    self.params = weights.load('normalized', 'vgg19')
    self.targets = targets.make_targets(
        self.config, self.model, self.params,
        targets.load_inputs(self.config, size))
    self.score = jax.jit(lambda p, t, x: step.objective(
        self.model, p, t, x)[1])

  def __call__(self, image) -> dict[str, float]:
    parts = self.score(self.params, self.targets, jax.numpy.asarray(image))
    return {k: float(v) for k, v in parts.items()}


def run_method(config, params, scorer: Scorer, every: int, load):
  """[(step, wall_s, content, style)] at every ``every`` steps."""
  warm = ml_collections.ConfigDict(config.to_dict())  # compile, untimed
  warm.num_steps = 1
  warm.scale_steps = (1,) * len(warm.scales)
  warm.log_every = warm.save_every = 0
  engine.stylize(warm, params=params, load=load)

  config.log_every, config.save_every = 0, every
  final_shape = load(config.content_image, config.image_size).shape
  curve, scoring = [], 0.0
  start = time.perf_counter()

  def on_save(step, image):
    nonlocal scoring
    t0 = time.perf_counter()
    if image.shape == final_shape:
      scores = scorer(image)
      curve.append((step, t0 - start - scoring, scores['content'],
                    scores['style']))
    scoring += time.perf_counter() - t0

  class Saves(engine.Callbacks):
    def save(self, member, step_, image):
      on_save(step_, image)

  image, _ = engine.stylize(config, params=params, load=load,
                            callbacks=Saves())
  return curve, image


def at(curve, t):
  """The last point of ``curve`` at or before wall time ``t``."""
  done = [p for p in curve if p[1] <= t]
  return done[-1] if done else None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--content', default='skimage:astronaut')
  parser.add_argument('--style', default='nst:swirls')
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--steps', type=int, default=500,
                      help='steps at each scale')
  parser.add_argument('--every', type=int, default=25)
  parser.add_argument('--style-weight', type=float, default=None)
  parser.add_argument('--init', default='content')
  parser.add_argument('--only', nargs='+', choices=list(METHODS),
                      default=list(METHODS))
  parser.add_argument('--out', default='', help='folder for the final '
                      'images and a JSON of the curves')
  args = parser.parse_args(argv)

  base = paper.get_config()
  base.content_image, base.style_image = args.content, args.style
  base.style_weight = (args.style_weight if args.style_weight is not None
                       else 1e6 * (args.size / 128) ** 2)
  base.init = args.init
  load = functools.cache(images.load)
  params = weights.load(base.weights, base.network)
  scorer = Scorer(base, args.size)
  print(f'{jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{args.size} px, {args.steps} steps per scale, content '
        f'{args.content}, style {args.style}, style_weight '
        f'{base.style_weight:.3g}', flush=True)
  curves = {}
  out = Path(args.out) if args.out else None
  if out:
    out.mkdir(parents=True, exist_ok=True)
  for name in args.only:
    config = method_config(base, name, args.size, args.steps)
    curves[name], image = run_method(config, params, scorer, args.every, load)
    if out:
      images.save(out / f'{name}.png', image)
    print(f'\n{name}: step  wall_s  content  style', flush=True)
    for at_step, wall, content, style in curves[name]:
      print(f"  {at_step:5d}  {wall:7.2f}  {content:.4e}  {style:.4e}")
  if out:
    (out / 'curves.json').write_text(json.dumps(curves))

  horizon = max(c[-1][1] for c in curves.values() if c)
  ref = curves.get('adam')
  marks = sorted({horizon * f for f in (0.25, 0.5, 1.0)} |
                 ({ref[-1][1]} if ref else set()))
  print('\nat wall time t (s): content, style; each / adam\'s at t')
  print(f'{"method":12s}' + ''.join(f'  t={t:<26.2f}' for t in marks))
  for name, curve in curves.items():
    cells = []
    for t in marks:
      p = at(curve, t)
      r = at(ref, t) if ref else None
      if p is None:
        cells.append(f'  {"(no output yet)":28s}')
      elif r is None:
        cells.append(f'  {p[2]:.3e} {p[3]:.3e}{"":8s}')
      else:
        cells.append(f'  {p[2]:.2e} {p[3]:.2e} '
                     f'{p[2] / r[2]:.2f}/{p[3] / r[3]:.2f}')
    print(f'{name:12s}' + ''.join(cells))
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
