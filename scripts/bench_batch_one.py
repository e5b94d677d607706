"""A group of one: the update vmapped with batch 1 against the member taken
out of the batch (what ``nst.engine`` runs for a chunk of one on one
device), same step, same inputs, interleaved rounds. With ``--batch N``,
the vmapped step holds N copies of the member: what a batch of N costs
against N single steps.

  python scripts/bench_batch_one.py [--sizes 256 512] [--steps 10]
      [--rounds 3] [--batch 1] [--optimizer lbfgs]

Prints ms per step of each and their ratio (vmapped / (N x unbatched)).
Random VGG-19 weights: a step's cost does not depend on their values.
"""
import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import default  # noqa: E402
from nst import backend  # noqa: E402
from nst import engine, optim, spec, step, targets, weights  # noqa: E402


def setup(size: int, optimizer: str, n: int = 1):
  config = default.get_config()
  config.image_size, config.optimizer = size, optimizer
  config.scales = config.scale_steps = ()
  program = spec.resolve(config, targets.image_loader(config)).program
  params = jax.device_put(step.prepare_params(
      program, weights.random_params('vgg19'),
      tuple(config.content_layers) + tuple(config.style_layers),
      spec.largest_side(config), n))
  inputs = targets.load_inputs(config, size)
  made = targets.make_targets(config, step.make_model(program), params,
                              inputs)
  hparams = optim.hyperparams(config)
  batch = lambda tree: jax.tree.map(
      lambda v: jnp.repeat(jnp.asarray(v)[None], n, axis=0), tree)
  return program, params, batch(made), batch(hparams), batch(inputs.content)


def timed(fn, args, steps: int) -> float:
  params, tgt, hp, image, state = args
  start = time.perf_counter()
  for _ in range(steps):
    image, state, _ = fn(params, tgt, hp, image, state)
  jax.block_until_ready(image)
  return (time.perf_counter() - start) / steps, (params, tgt, hp, image,
                                                  state)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--optimizer', default='lbfgs')
  parser.add_argument('--batch', type=int, default=1)
  args = parser.parse_args(argv)
  n = args.batch
  for size in args.sizes:
    program, params, tgt, hp, image = setup(size, args.optimizer)
    batched = setup(size, args.optimizer, n)[1:]
    fns = {'unbatched': jax.jit(engine.over_members(
               step.make_update(program.update), single=True,
               shared_first=True), donate_argnums=(3, 4)),
           'vmapped': jax.jit(jax.vmap(step.make_update(program.update, n),
                                       in_axes=(None, 0, 0, 0, 0)),
                              donate_argnums=(3, 4))}
    init = jax.vmap(lambda h, x: step.init_state(program.update, h, x))
    state = {'unbatched': (params, tgt, hp, image, init(hp, image.copy())),
             'vmapped': (*batched, init(batched[2], batched[3].copy()))}
    times = {k: [] for k in fns}
    for k, fn in fns.items():  # compile and warm up
      _, state[k] = timed(fn, state[k], 2)
    for _ in range(args.rounds):
      for k, fn in fns.items():
        t, state[k] = timed(fn, state[k], args.steps)
        times[k].append(t)
    best = {k: min(v) for k, v in times.items()}
    print(f'{size} px {args.optimizer}: unbatched {1e3 * best["unbatched"]:.1f}'
          f' ms/step, vmapped (batch {n}) {1e3 * best["vmapped"]:.1f} ms/step, '
          f'ratio vmapped/({n} x unbatched) '
          f'{best["vmapped"] / (n * best["unbatched"]):.3f} '
          f'(best of {args.rounds} rounds of {args.steps})', flush=True)
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
