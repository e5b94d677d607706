"""A group of one: the update vmapped with batch 1 against the member taken
out of the batch (what ``nst.engine`` runs for a chunk of one on one
device), same step, same inputs, interleaved rounds. With ``--batch N``,
the vmapped step holds N copies of the member: what a batch of N costs
against N single steps.

  python scripts/bench_batch_one.py [--sizes 256 512] [--steps 10]
      [--rounds 3] [--batch 1] [--optimizer lbfgs] [--convolution auto]

Prints ms per step of each and their ratio (vmapped / (N x unbatched)),
and the arithmetic rate of each: a step's multiply-adds counted as direct
convolutions (the forward pass to the deepest layer the loss reads, and
its input gradient, as many again), in GFLOP/s, against the rate of a
2048x2048 float32 matmul measured in the same run. A rate above the
matmul's means the step did fewer multiplies than counted (Winograd's
convolutions, ``--convolution``). Random VGG-19 weights: a step's cost
does not depend on their values.
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
from nst import engine, optim, spec, step, targets, vgg, weights  # noqa: E402


def setup(size: int, optimizer: str, n: int = 1, convolution: str = 'auto'):
  config = default.get_config()
  config.image_size, config.optimizer = size, optimizer
  config.convolution = convolution
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


def step_flops(network: str, layers, shape) -> float:
  """Floating-point operations of one step for an image of ``shape``
  (H, W, C), counted as direct 3x3 convolutions: 2 per multiply-add, the
  forward pass up to the deepest of ``layers`` and the input gradient."""
  h, w, ins = shape
  macs = 0
  for name in vgg.up_to(vgg.conv_names(network), layers):
    block, outs = int(name[4]), vgg.width(name)
    macs += (h >> (block - 1)) * (w >> (block - 1)) * ins * outs * 9
    ins = outs
  return 2 * 2 * macs


def matmul_rate(n: int = 2048, rounds: int = 5) -> float:
  """GFLOP/s of an n x n float32 matmul on the default device."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = float('inf')
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9


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
  parser.add_argument('--convolution', default='auto',
                      choices=list(vgg.CONVOLUTIONS))
  args = parser.parse_args(argv)
  n = args.batch
  config = default.get_config()
  layers = tuple(config.content_layers) + tuple(config.style_layers)
  peak = matmul_rate()
  print(f'2048x2048 float32 matmul: {peak:.0f} GFLOP/s', flush=True)
  for size in args.sizes:
    program, params, tgt, hp, image = setup(size, args.optimizer, 1,
                                            args.convolution)
    batched = setup(size, args.optimizer, n, args.convolution)[1:]
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
    flops = step_flops(program.network, layers, image.shape[1:])
    rate = {k: flops * (n if k == 'vmapped' else 1) / t / 1e9
            for k, t in best.items()}
    print(f'{size} px ({image.shape[2]}x{image.shape[1]}) {args.optimizer}, '
          f'{args.convolution}: unbatched {1e3 * best["unbatched"]:.1f}'
          f' ms/step, vmapped (batch {n}) {1e3 * best["vmapped"]:.1f} ms/step, '
          f'ratio vmapped/({n} x unbatched) '
          f'{best["vmapped"] / (n * best["unbatched"]):.3f} '
          f'(best of {args.rounds} rounds of {args.steps}); '
          f'{flops / 1e9:.2f} GFLOP per member-step as direct convolutions: '
          f'{rate["unbatched"]:.0f} and {rate["vmapped"]:.0f} GFLOP/s '
          f'({rate["unbatched"] / peak:.2f} and {rate["vmapped"] / peak:.2f}'
          ' of the matmul)', flush=True)
  return 0


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  sys.exit(main())
