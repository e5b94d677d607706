"""Command line: ``python -m nst.run --config configs/default.py``.

Flags and main only; the work is ``nst.stylize``, or ``nst.sweep`` for a
config with a ``sweep`` section (``--config configs/sweeps/fig3.py``). Any
config field can be overridden (``--config.style_weight=1e4``); a misspelt
field is an error.
Writes into ``--workdir`` (default ``runs/<config>-<time>``):
  config.json      the resolved config
  metrics.jsonl    one row per log step: step, size, loss, content, style,
                   tv, steps/s
  step_00050.png   intermediate images every ``save_every`` steps
  final.png        the result
  last_finite_NNNNN.png  instead, if the loss became non-finite: the output
                   of the latest log step whose loss was finite
A sweep writes config.json, metrics.jsonl, members/NNNN.png (+ .json, the
member's full config), results.csv, contact_sheet.png and index.html.
An existing, non-empty workdir is refused unless ``--overwrite`` is given.
"""
from __future__ import annotations

import datetime
import functools
import json
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nst import images, stylize, sweep, weights
from nst.errors import Diverged, UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/default.py', 'Path to a config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output directory (default: runs/<config>-<time>).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Allow writing into an existing non-empty workdir.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Sweeps: call jax.distributed.initialize() (auto: when Slurm, Open MPI, '
    'a TPU pod or JAX_COORDINATOR_ADDRESS describes several processes).')


def default_workdir(config_path: str) -> Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  base = Path('runs') / f'{Path(config_path).stem}-{stamp}'
  path, n = base, 1
  while path.exists():
    n += 1
    path = base.with_name(f'{base.name}-{n}')
  return path


def check_workdir(workdir: Path, overwrite: bool) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f'workdir {str(workdir)!r} exists and is not a directory')
  if workdir.is_dir() and any(workdir.iterdir()) and not overwrite:
    raise UserError(f'workdir {str(workdir)!r} already holds files; choose '
                    'another --workdir or pass --overwrite')


def run(config, workdir: Path, overwrite: bool = False) -> Path:
  """Checks everything, then stylises; returns the final image's path."""
  stylize.check_config(config)
  check_workdir(workdir, overwrite)
  load = functools.cache(images.load)  # each image read once per size
  inputs = stylize.load_inputs(config, config.image_size, load)  # checks
  h, w = inputs.content.shape[:2]
  params = weights.load(config.weights, config.network)

  workdir.mkdir(parents=True, exist_ok=True)
  images.write_atomic(workdir / 'config.json',
                      config.to_json(indent=2).encode())
  metrics_file = open(workdir / 'metrics.jsonl', 'a')
  plan = stylize.scale_plan(config)
  steps = ' + '.join(f'{n} at {size} px' for size, n in plan[:-1])
  print(f'{w}x{h} px, {steps + " + " if steps else ""}{config.num_steps} '
        f'steps of {config.optimizer} -> {workdir}', flush=True)
  total = sum(n for _, n in plan)

  def on_log(step, m):
    metrics_file.write(json.dumps(m) + '\n')
    metrics_file.flush()
    print(f'step {step:5d}/{total}  loss {m["loss"]:.4e}  '
          f'content {m["content"]:.4e}  style {m["style"]:.4e}  '
          f'tv {m["tv"]:.3e}' + (f'  {m["steps_per_s"]:.2f} steps/s'
                                 if m['steps_per_s'] else '') +
          (f'  ({m["size"]} px)' if len(plan) > 1 else ''), flush=True)

  def on_save(step, image):
    images.save(workdir / f'step_{step:05d}.png', image)

  with metrics_file:
    try:
      image, _ = stylize.stylize(config, params, load=load, on_log=on_log,
                                 on_save=on_save)
    except Diverged as e:
      if e.last_finite is None:
        raise
      step, image = e.last_finite
      kept = workdir / f'last_finite_{step:05d}.png'
      images.save(kept, image)
      raise UserError(f'{e}; the output of step {step} is in {kept}') from None
  final = workdir / 'final.png'
  images.save(final, image)
  print(f'wrote {final}', flush=True)
  return final


def parse_flags(argv):
  """absl's parser, with config mistakes (a misspelt field, a value of the
  wrong type) reported as one line and exit status 2 instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections nests the KeyError's repr: "'\\'field\\'\\nDid you..."
    message = str(e.args[0] if e.args else e).strip('"\'')
    message = message.replace('\\n', ' ').replace("\\'", "'")
    message = f'unknown or invalid config field: {message}'
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  workdir = (Path(_WORKDIR.value) if _WORKDIR.value else
             default_workdir(config_flags.get_config_filename(flags.FLAGS[
                 'config'])))
  config = _CONFIG.value
  try:
    if 'sweep' in config:
      joined = sweep.initialize_distributed(_DISTRIBUTED.value)
      if joined and not _WORKDIR.value:
        raise UserError('a sweep over several processes needs --workdir: '
                        'the same directory for every process')
      check_workdir(workdir, _OVERWRITE.value)
      sweep.run(config, workdir)
    else:
      run(config, workdir, _OVERWRITE.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
