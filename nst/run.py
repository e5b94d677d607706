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
  checkpoint.npz   every ``checkpoint_every`` steps and when SIGINT or
                   SIGTERM stops the run (then with step_NNNNN.png, the
                   output so far): ``--resume`` continues from it, and the
                   steps after it are the same as an unstopped run's
A sweep writes config.json, metrics.jsonl, members/NNNN.png (+ .json, the
member's full config, and .result.json, its losses), results.csv,
contact_sheet.png and index.html. Stopped by SIGINT or SIGTERM, it keeps the
members it finished and checkpoints the chunk in progress; ``--resume``
continues that chunk and runs the members not yet started.
An existing, non-empty workdir is refused unless ``--overwrite`` or
``--resume`` is given; ``--resume`` needs the same config as the stopped run.
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import signal
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nst import checkpoint, images, stylize, sweep, weights
from nst.errors import Diverged, Stopped, UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/default.py', 'Path to a config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output directory (default: runs/<config>-<time>).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Allow writing into an existing non-empty workdir.')
_RESUME = flags.DEFINE_bool(
    'resume', False, 'Continue the stopped run in --workdir from its '
    'checkpoint, or the stopped sweep with its unfinished members (same '
    'config).')
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
                    'another --workdir, pass --resume to continue a stopped '
                    'run there, or --overwrite')


def check_resume(config, workdir: Path) -> checkpoint.Checkpoint:
  """The workdir's checkpoint, if it was made with this config."""
  ckpt = checkpoint.load(workdir / checkpoint.NAME)
  checkpoint.check_same_config(ckpt.config, config, workdir)
  return ckpt


def check_sweep_resume(config, workdir: Path) -> None:
  """Resuming a sweep needs its workdir and the same config."""
  try:
    saved = json.loads((workdir / 'config.json').read_text())
  except (OSError, ValueError) as e:
    raise UserError(f'nothing to resume in {str(workdir)!r}: cannot read '
                    f'its config.json ({e})') from None
  checkpoint.check_same_config(saved, config, workdir)


class StopRequest:
  """SIGINT and SIGTERM ask the run to stop after the step it is at (it then
  checkpoints). Steps are dispatched ahead of the device, so Python sees
  the signal once the queued ones are done, at the latest at the next log
  step. A second SIGINT interrupts at once."""

  def __init__(self):
    self.signal = None

  def __enter__(self):
    self.previous = {s: signal.signal(s, self.handle)
                     for s in (signal.SIGINT, signal.SIGTERM)}
    return self

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  def handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      # Exits here rather than raising KeyboardInterrupt: a signal handler
      # runs between any two bytecodes, also inside JAX's callbacks, where
      # an exception is printed as a traceback and swallowed. Every file is
      # written atomically, so nothing is left half-written.
      print('interrupted', file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(130)
    self.signal = signum
    print(f'{signal.Signals(signum).name}: stopping after the steps under '
          'way (again to interrupt at once)', file=sys.stderr, flush=True)

  def __call__(self) -> bool:
    return self.signal is not None


def run(config, workdir: Path, overwrite: bool = False,
        resume: bool = False, stop: StopRequest | None = None) -> Path:
  """Checks everything, then stylises; returns the final image's path.

  With ``resume``, continues from ``workdir``'s checkpoint."""
  stylize.check_config(config)
  ckpt = check_resume(config, workdir) if resume else None
  if not resume:
    check_workdir(workdir, overwrite)
  load = functools.cache(stylize.image_loader(config))  # once per size
  inputs = stylize.load_inputs(config, config.image_size, load)  # checks
  h, w = inputs.content.shape[:2]
  params = weights.load(config.weights, config.network)

  workdir.mkdir(parents=True, exist_ok=True)
  config_json = config.to_json(indent=2)
  if ckpt:
    checkpoint.keep_rows(workdir / 'metrics.jsonl',
                         lambda r: r['step'] <= ckpt.done)
  else:
    images.write_atomic(workdir / 'config.json', config_json.encode())
  metrics_file = open(workdir / 'metrics.jsonl', 'a')
  plan = stylize.scale_plan(config)
  steps = ' + '.join(f'{n} at {size} px' for size, n in plan[:-1])
  print(f'{w}x{h} px, {steps + " + " if steps else ""}{config.num_steps} '
        f'steps of {config.optimizer} -> {workdir}'
        + (f' (resuming after step {ckpt.done})' if ckpt else ''), flush=True)
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

  def on_checkpoint(step, image, state):
    checkpoint.save(workdir / checkpoint.NAME, step, image, state,
                    config_json)

  with metrics_file:
    try:
      image, _ = stylize.stylize(config, params, load=load, on_log=on_log,
                                 on_save=on_save, on_checkpoint=on_checkpoint,
                                 should_stop=stop, resume=ckpt)
    except Diverged as e:
      if e.last_finite is None:
        raise
      step, image = e.last_finite
      kept = workdir / f'last_finite_{step:05d}.png'
      images.save(kept, image)
      raise UserError(f'{e}; the output of step {step} is in {kept}') from None
    except Stopped as e:
      on_save(e.step, e.image)
      raise
  final = workdir / 'final.png'
  images.save(final, image)
  print(f'wrote {final}', flush=True)
  return final


def parse_flags(argv):
  """absl's parser, with config mistakes (a missing or broken config file, a
  misspelt field, a value of the wrong type) reported as one line and exit
  status 2 instead of a traceback."""
  try:
    rest = flags.FLAGS(argv)
    # A config file that failed to load is reported only when the config is
    # first used: use it here.
    'content_image' in _CONFIG.value  # pylint: disable=pointless-statement
    return rest
  except flags.Error as e:
    # The config file's own errors come with a traceback: keep its first
    # line and the exception's.
    lines = [l for l in str(e).splitlines() if l.strip()]
    message = (f'{lines[0]} {lines[-1].strip()}' if 'Traceback' in str(e)
               else str(e))
  except (OSError, SyntaxError, ImportError) as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    last = lines[-1] if lines else type(e).__name__
    message = 'config file: ' + last.split('failure to load: ')[-1]
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections nests the KeyError's repr: "'\\'field\\'\\nDid you..."
    message = str(e.args[0] if e.args else e).strip('"\'')
    message = message.replace('\\n', ' ').replace("\\'", "'")
    message = (f'unknown or invalid config field: {message}'
               + _sweep_field_hint(argv, message))
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _sweep_field_hint(argv, message: str) -> str:
  """Why an override of a real sweep field can be refused: only fields the
  config file sets exist to be overridden (``nst.sweep`` gives the others
  their defaults later)."""
  for arg in argv[1:]:
    name = arg.split('=', 1)[0]
    field = name.removeprefix('--config.sweep.')
    if (name != field and field != 'axes' and field in sweep.SWEEP_DEFAULTS
        and field in message):
      return (f'; sweep.{field} can be overridden only when the config '
              f'file sets it: add c.sweep.{field} = '
              f'{sweep.SWEEP_DEFAULTS[field]!r} to its sweep section')
  return ''


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _RESUME.value and not _WORKDIR.value:
    print('error: --resume needs --workdir: the directory of the run to '
          'continue', file=sys.stderr)
    sys.exit(2)
  workdir = (Path(_WORKDIR.value) if _WORKDIR.value else
             default_workdir(config_flags.get_config_filename(flags.FLAGS[
                 'config'])))
  config = _CONFIG.value
  stop = StopRequest()
  try:
    # Joining a multi-process job installs JAX's own SIGTERM handler (its
    # preemption notifier), which would take the signal from StopRequest:
    # join first.
    joined = 'sweep' in config and sweep.initialize_distributed(
        _DISTRIBUTED.value)
    with stop:
      if 'sweep' in config:
        if joined and not _WORKDIR.value:
          raise UserError('a sweep over several processes needs --workdir: '
                          'the same directory for every process')
        if _RESUME.value:
          check_sweep_resume(config, workdir)
        else:
          check_workdir(workdir, _OVERWRITE.value)
        sweep.run(config, workdir, resume=_RESUME.value, should_stop=stop)
      else:
        run(config, workdir, _OVERWRITE.value, _RESUME.value, stop)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except Stopped as e:
    kept = ('the finished members and a checkpoint of the chunk in '
            'progress are' if 'sweep' in config else
            f'checkpoint and step_{e.step:05d}.png are')
    print(f'stopped after step {e.step}; {kept} in {workdir}; continue with '
          f'the same command and --resume --workdir {workdir}',
          file=sys.stderr)
    # A process of a multi-process sweep may stop because another was
    # signalled; it exits as if it had been sent SIGTERM.
    sys.exit(128 + (stop.signal or signal.SIGTERM))
  except KeyboardInterrupt:
    # At once, without tearing the interpreter down under computations
    # still running on XLA's threads (that can crash the exit). Every file
    # is written atomically, so nothing is left half-written.
    print('interrupted', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
