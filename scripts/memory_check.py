"""The memory estimate (``nst.memory``) against XLA's own plan of the step.

  python scripts/memory_check.py [--sizes 256 512 1024] [--optimizers adam lbfgs] [--remat]

For the default config (configs/default.py, random weights: the plan does
not depend on their values) at each size and optimiser, prints
``nst.memory.estimate``'s ``step`` (the params once, the member's image,
state and targets, the step's workspace), XLA's plan of the step a run
compiles (``nst.engine.compiled``, lowered from shapes and compiled, never
run: arguments + outputs + temporaries - aliased), the ratio of the two,
the whole estimate (device + host) and the time ``nst.memory.check`` takes.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import default  # noqa: E402
from nst import engine, memory, optim, spec, step, targets, weights  # noqa: E402


def _bytes(tree) -> int:
  return sum(math.prod(v.shape) * jnp.dtype(v.dtype).itemsize
             for v in jax.tree.leaves(tree))


def xla_plan(config, members: int = 1) -> dict[str, int]:
  """XLA's plan (bytes) of the step ``nst.engine`` compiles for a chunk of
  ``members`` copies of ``config``'s run at its final scale on one device,
  lowered from shapes (``jax.eval_shape``): nothing runs at size.
  ``plan``: arguments + outputs + temporaries - aliased outputs;
  ``held``: the same with every argument passed counted (jit leaves out
  of its plan the ones the step never reads, which the run holds
  anyway)."""
  member = spec.resolve(config, targets.image_loader(config))
  program = member.program
  mesh = engine.member_mesh(jax.devices()[:1])
  step_fn, init, _, _, per_member, replicated = engine.compiled(
      program.update, mesh, members)
  content = engine.union_layers([config.content_layers], program.network)
  style = engine.union_layers([config.style_layers], program.network)
  raw = {'params': {}}
  for key, shape in weights.expected_shapes(program.network).items():
    layer, name = key.split('/')
    raw['params'].setdefault(layer, {})[name] = jax.ShapeDtypeStruct(
        shape, jnp.float32)
  params = jax.eval_shape(lambda p: step.prepare_params(
      program, p, content + style, spec.largest_side(config)), raw)
  shape, _ = program.plan[-1]
  inputs = targets.load_inputs(config, max(shape[:2]))
  model = step.make_model(program)
  made = jax.eval_shape(
      lambda p, c, s: targets.make_targets(
          config, model, p, targets.Inputs(c, s, inputs.masks, c),
          content_layers=content, style_layers=style),
      params, jax.ShapeDtypeStruct(shape, jnp.float32),
      [jax.ShapeDtypeStruct(s.shape, jnp.float32) for s in inputs.styles])
  batch = lambda tree: jax.tree.map(lambda v: jax.ShapeDtypeStruct(
      (members, *v.shape), v.dtype, sharding=per_member), tree)
  made = batch(made)
  hparams = batch(jax.eval_shape(lambda: optim.hyperparams(config)))
  image = batch(jax.ShapeDtypeStruct(shape, jnp.float32))
  state = jax.eval_shape(init, hparams, image)
  params = jax.tree.map(lambda v: jax.ShapeDtypeStruct(
      v.shape, v.dtype, sharding=replicated), params)
  stats = step_fn.lower(params, made, hparams, image,
                        state).compile().memory_analysis()
  rest = (stats.output_size_in_bytes + stats.temp_size_in_bytes
          - stats.alias_size_in_bytes)
  return {'plan': stats.argument_size_in_bytes + rest,
          'held': _bytes((params, made, hparams, image, state)) + rest,
          'params': _bytes(params), 'temp': stats.temp_size_in_bytes}


def config_at(size: int, optimizer: str, remat: bool = False, **fields):
  """configs/default.py at ``size`` px with random weights."""
  c = default.get_config()
  c.image_size, c.optimizer, c.remat, c.weights = size, optimizer, remat, (
      'random')
  for k, v in fields.items():
    c[k] = v
  return c


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512,
                                                                1024])
  parser.add_argument('--optimizers', nargs='+', default=['adam', 'lbfgs'])
  parser.add_argument('--remat', action='store_true',
                      help='also with remat=True')
  args = parser.parse_args()
  mib = lambda b: f'{b / 2**20:9.1f}'
  print(f'backend: {jax.default_backend()}; MiB; ratio = estimate / XLA '
        '(held: every argument counted)')
  print(f'{"size":>5} {"shape":>9} {"optimizer":>9} {"remat":>5} '
        f'{"estimate":>9} {"XLA held":>9} {"ratio":>5} {"XLA plan":>9} '
        f'{"ratio":>5} {"whole":>9} {"check ms":>8}')
  for size in args.sizes:
    for optimizer in args.optimizers:
      for remat in (False, True) if args.remat else (False,):
        config = config_at(size, optimizer, remat)
        t = time.perf_counter()
        memory.check([config], devices=1)
        check_ms = 1e3 * (time.perf_counter() - t)
        est = memory.estimate([config])
        plan = xla_plan(config)
        h, w = spec.resolve(config, targets.image_loader(
            config)).program.plan[-1][0][:2]
        print(f'{size:5d} {f"{w}x{h}":>9} {optimizer:>9} {str(remat):>5} '
              f'{mib(est.step)} {mib(plan["held"])} '
              f'{est.step / plan["held"]:5.2f} {mib(plan["plan"])} '
              f'{est.step / plan["plan"]:5.2f} {mib(est.on_host)} '
              f'{check_ms:8.1f}', flush=True)


if __name__ == '__main__':
  main()
