"""The memory estimate (``nst.memory``) against XLA's own plan of the step.

  python scripts/memory_check.py [--sizes 256 512 1024] \\
      [--optimizers adam lbfgs] [--remat] [--rss]

For configs/default.py (random weights: the plan does not depend on their
values) at each size, optimiser and (``--remat``) remat setting, prints
``nst.memory.estimate``'s ``step`` (the params once, the member's image,
state and targets, the step's workspace); XLA's plan of the step a run
compiles (``nst.engine.compiled``, lowered from shapes and compiled, never
run: arguments + outputs + temporaries - aliased), with every argument
counted ("held": jit leaves out of its plan the parameters the step never
reads, which the run holds anyway) and as XLA gives it ("plan"); the
ratios; the whole estimate (what ``nst.memory.check`` compares with the
memory available) and the time ``check`` took. ``--rss`` also runs each
config with 2 steps at each scale (``short_run``) in a fresh process and
prints the process's peak resident memory less what it held before the
run (imports and the backend), against the whole estimate of that run.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import default  # noqa: E402
from nst import backend  # noqa: E402
from nst import (engine, memory, optim, sharding, spec, step, targets,  # noqa: E402
                 weights)


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
  mesh = sharding.member_mesh(jax.devices()[:1])
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
      program, p, content + style, spec.largest_side(config), members), raw)
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


def peak_rss(size: int, optimizer: str, remat: bool) -> int:
  """Bytes: the peak resident memory of a fresh process running
  ``short_run(size, optimizer, remat)`` less what it held before."""
  out = subprocess.run(
      [sys.executable, __file__, '--short-run', str(size), optimizer,
       str(remat)], capture_output=True, text=True, check=True)
  return int(out.stdout.split()[-1])


def short_run(size: int, optimizer: str, remat: bool):
  """The config of ``config_at`` with 2 steps at each scale."""
  return config_at(size, optimizer, remat, scale_steps=(2, 2), num_steps=2)


def _short_run(size: str, optimizer: str, remat: str) -> None:
  import resource  # pylint: disable=import-outside-toplevel
  from nst import runner  # pylint: disable=import-outside-toplevel
  jax.devices()
  config = short_run(int(size), optimizer, remat == 'True')
  rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
  before = rss()
  with tempfile.TemporaryDirectory() as folder:
    runner.run(config, Path(folder) / 'run', memory_check=False)
  print(rss() - before)


def main():
  if sys.argv[1:2] == ['--short-run']:
    return _short_run(*sys.argv[2:5])
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512,
                                                                1024])
  parser.add_argument('--optimizers', nargs='+', default=['adam', 'lbfgs'])
  parser.add_argument('--remat', action='store_true',
                      help='also with remat=True')
  parser.add_argument('--rss', action='store_true',
                      help="also each short run's peak memory")
  args = parser.parse_args()
  jax.devices()  # the backend starts before anything is timed
  mib = lambda b: f'{b / 2**20:9.1f}'
  print(f'backend: {jax.default_backend()}, jax {jax.__version__}; MiB; '
        'ratio: estimate / XLA')
  print(f'{"size":>5} {"shape":>9} {"optimizer":>9} {"remat":>5} '
        f'{"estimate":>9} {"XLA held":>9} {"ratio":>5} {"XLA plan":>9} '
        f'{"ratio":>5} {"whole":>9} {"check ms":>8}'
        + (f' {"run whole":>9} {"peak RSS":>9} {"ratio":>5}'
           if args.rss else ''))
  for size in args.sizes:
    for optimizer in args.optimizers:
      for remat in (False, True) if args.remat else (False,):
        config = config_at(size, optimizer, remat)
        t = time.perf_counter()
        est = memory.check(config)
        check_ms = 1e3 * (time.perf_counter() - t)
        plan = xla_plan(config)
        h, w = spec.resolve(config, targets.image_loader(
            config)).program.plan[-1][0][:2]
        line = (f'{size:5d} {f"{w}x{h}":>9} {optimizer:>9} {str(remat):>5} '
                f'{mib(est.step)} {mib(plan["held"])} '
                f'{est.step / plan["held"]:5.2f} {mib(plan["plan"])} '
                f'{est.step / plan["plan"]:5.2f} {mib(est.on_host)} '
                f'{check_ms:8.1f}')
        if args.rss:
          whole = memory.estimate(short_run(size, optimizer, remat)).on_host
          peak = peak_rss(size, optimizer, remat)
          line += f' {mib(whole)} {mib(peak)} {whole / peak:5.2f}'
        print(line, flush=True)


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  main()
