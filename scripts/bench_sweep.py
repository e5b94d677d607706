"""Members per second: a sweep run as one batch versus member after member.

  python scripts/bench_sweep.py [--members 8] [--sizes 64 128] [--steps 30]
                                [--optimizer adam|lbfgs] [--weights SPEC]

For each image size, N members (alpha/beta ratios, one program) are run
  batched:     nst.sweep (one vmapped, jitted step for all N, on every
               device), and
  sequential:  each member as a run of its own (a group of one), N runs.
Two numbers per path: end-to-end members/s (wall clock, compilation and
target computation included, as a user meets it) and steady-state members/s
(from each path's steps/s after its first, compiling, step). Ratios are
batched / sequential, measured in the same process. Random VGG-19 weights
unless ``--weights`` is given: speed does not depend on the values.
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
from nst import engine, sweep  # noqa: E402


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
  c.sweep.axes.ratio = tuple(float(r) for r in np.logspace(-6, -3, members))
  c.sweep.zip = ()
  c.sweep.rows = 'ratio'
  c.sweep.cols = ''
  c.sweep.chunk_size = 0
  return c


def batched(config) -> tuple[float, float]:
  """(wall seconds, seconds of steady-state stepping for all members)."""
  start = time.perf_counter()
  loader = engine.Loader()
  _, members = sweep.expand(config, loader.images_for)
  stepping = 0.0
  for group in sweep.group(members):
    results = engine.run([group], loader=loader)
    chunks = {r.chunk: r.steps_per_s for r in results}
    stepping += sum(config.num_steps / s for s in chunks.values())
  return time.perf_counter() - start, stepping


def sequential(config) -> tuple[float, float]:
  start = time.perf_counter()
  _, members = sweep.expand(config)
  stepping = 0.0
  for m in members:
    c = m.config
    result, = engine.run([[m]], loader=engine.Loader(),
                         devices=jax.devices()[:1])
    stepping += c.num_steps / result.steps_per_s
  return time.perf_counter() - start, stepping


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--members', type=int, default=8)
  parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--weights', default='random')
  parser.add_argument('--optimizer', default='adam', choices=['adam', 'lbfgs'])
  args = parser.parse_args(argv)
  n = args.members
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s) '
        f'({jax.devices()[0].device_kind}); {n} members x {args.steps} steps '
        f'of {args.optimizer}',
        flush=True)
  print('size  path        wall s  members/s end-to-end  members/s steady  '
        'ms per member-step', flush=True)
  for size in args.sizes:
    rows = {}
    for name, path in (('sequential', sequential), ('batched', batched)):
      wall, stepping = path(sweep_config(n, size, args.steps, args.weights,
                                         args.optimizer))
      rows[name] = (n / wall, n / stepping)
      print(f'{size:4d}  {name:10s}  {wall:6.1f}  {n / wall:20.3f}  '
            f'{n / stepping:16.3f}  {1e3 * stepping / n / args.steps:18.1f}',
            flush=True)
    print(f'{size:4d}  ratio batched/sequential: end-to-end '
          f'{rows["batched"][0] / rows["sequential"][0]:.2f}x, steady '
          f'{rows["batched"][1] / rows["sequential"][1]:.2f}x', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
