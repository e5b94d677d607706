"""Members per second: a sweep run as one batch versus member after member.

  python scripts/bench_sweep.py [--members 5 8] [--sizes 64 128]
      [--steps 30] [--optimizers lbfgs lbfgs_zoom adam] [--weights SPEC]
      [--rounds 1]

For each optimiser, image size and member count N, N members (style
weights from 1/4 to 4 times the default's, one program) of configs/default.py's recipe (its coarse scales
included: ``--steps`` counts the steps at full size, after the coarse
scales' 300; a coarse scale below ``min_scale_size`` runs its steps at the
next size) are run
  batched:     nst.sweep (one vmapped, jitted step for all N, on every
               device), and
  sequential:  the same sweep one member per device at a time (chunks of
               the device count: ``--config.sweep.chunk_size=1`` on one
               device), sharing the weights, images and compiled step.
Two numbers per path: end-to-end members/s (wall clock, compilation and
target computation included, as a user meets it) and steady-state members/s
(from each chunk's steps/s, ``engine.Result.steps_per_s``: each scale's
start, with its compiling, and first step left out). Ratios are
batched / sequential, measured in the same process. With ``--rounds R``
the two paths alternate R times and each keeps its best round: a shared
machine's slow spells (a minute at a time on this project's CPU) then
fall on one round of a path rather than decide the ratio. The pretrained VGG-19
unless ``--weights`` is given: a line search's trials (lbfgs_zoom) depend
on the loss the weights make; Adam's and lbfgs's steps do not
(``--weights=random`` measures those as well).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from nst import backend  # noqa: E402
from nst import engine, optim, step, sweep  # noqa: E402


def sweep_config(members: int, size: int, steps: int, weights_spec: str,
                 optimizer: str = 'adam'):
  c = default.get_config()
  c.weights = weights_spec
  c.optimizer = optimizer
  c.image_size = size
  c.num_steps = steps
  c.log_every = 0
  c.save_every = 0
  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  c.sweep.axes.style_weight = tuple(  # doubling around the default's
      float(w) for w in c.style_weight * np.logspace(-2, 2, members, base=2))
  c.sweep.zip = ()
  c.sweep.rows = 'style_weight'
  c.sweep.cols = ''
  c.sweep.chunk_size = 0
  return c


def batched(config) -> tuple[float, float]:
  """(wall seconds, seconds of stepping for all members after each chunk's
  first step), for the sweep run as ``config.sweep.chunk_size`` says (0:
  every member in one chunk)."""
  jax.clear_caches()  # each path compiles what it runs, as a new process
  engine.compiled.cache_clear()
  step.clear_cache()
  start = time.perf_counter()
  loader = engine.Loader()
  _, members = sweep.expand(config, loader.images_for)
  stepping = 0.0
  for group in sweep.group(members):
    results = engine.run([group], loader=loader,
                         chunk_size=config.sweep.chunk_size)
    chunks = {r.chunk: (r.member.program.total_steps, r.steps_per_s)
              for r in results}
    stepping += sum(n / s for n, s in chunks.values())
  return time.perf_counter() - start, stepping


def sequential(config) -> tuple[float, float]:
  """The same sweep with one member per device per chunk (what
  ``--config.sweep.chunk_size=1`` runs on one device)."""
  config.sweep.chunk_size = jax.device_count()
  return batched(config)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--members', type=int, nargs='+', default=[5, 8])
  parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--weights', default='')
  parser.add_argument('--optimizers', nargs='+', default=['lbfgs'],
                      choices=list(optim.OPTIMIZERS))
  parser.add_argument('--rounds', type=int, default=1)
  args = parser.parse_args(argv)
  if args.rounds < 1:
    parser.error(f'--rounds must be at least 1, not {args.rounds}')
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s) '
        f'({jax.devices()[0].device_kind}); {args.steps} steps at full size '
        'after the default coarse scales', flush=True)
  print('optimizer   size  n  path        wall s  members/s end-to-end  '
        'members/s steady  ms per member-step', flush=True)
  for optimizer in args.optimizers:
    for size in args.sizes:
      for n in args.members:
        rows = {}
        for _ in range(args.rounds):
          for name, path in (('sequential', sequential),
                             ('batched', batched)):
            config = sweep_config(n, size, args.steps, args.weights,
                                  optimizer)
            wall, stepping = path(config)
            steps = sum(s for s in config.scale_steps) + args.steps
            best = rows.get(name, (0.0, 0.0))
            rows[name] = (max(best[0], n / wall), max(best[1], n / stepping))
            print(f'{optimizer:10s}  {size:4d}  {n}  {name:10s}  {wall:6.1f}  '
                  f'{n / wall:20.3f}  {n / stepping:16.3f}  '
                  f'{1e3 * stepping / n / steps:18.1f}', flush=True)
        print(f'{optimizer:10s}  {size:4d}  {n}  ratio batched/sequential'
              f'{f" (best of {args.rounds} rounds)" if args.rounds > 1 else ""}:'
              f' end-to-end {rows["batched"][0] / rows["sequential"][0]:.2f}x,'
              f' steady {rows["batched"][1] / rows["sequential"][1]:.2f}x',
              flush=True)
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
