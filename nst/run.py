"""Command line: ``python -m nst.run --config configs/default.py``.

Flags -> ``workdir.run`` (config -> members -> ``engine`` -> files) -> exit
code, and the signals that stop a run. Any config field can be overridden (``--config.style_weight=1e4``); a misspelt field is
an error. Writes into ``--workdir`` (default ``runs/<config>-<time>``); the
layout, ``--overwrite`` and ``--resume`` are ``nst.workdir``'s. A run that
needs more memory than is available is refused first (``nst.memory``);
``--nomemory_check`` skips that.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nst import signals, sweep, workdir
from nst.errors import Stopped, UserError

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
_MEMORY_CHECK = flags.DEFINE_bool(
    'memory_check', True, 'Refuse, before anything is read or written, a '
    'run whose estimated memory (nst.memory) is more than is available; '
    '--nomemory_check skips this where the estimate is wrong for the '
    'machine.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Sweeps: call jax.distributed.initialize() (auto: when Slurm, Open MPI, '
    'a TPU pod or JAX_COORDINATOR_ADDRESS describes several processes).')


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
  except (flags.Error, OSError, SyntaxError, ImportError, AttributeError,
          KeyError, TypeError, ValueError) as e:
    print(f'error: {config_error(e, argv)}', file=sys.stderr)
    sys.exit(2)


def config_error(e: Exception, argv) -> str:
  """The one line for an exception from parsing the flags and loading the
  config file (the only place that reads ml_collections' error texts)."""
  text = str(e)
  if isinstance(e, flags.Error):
    # The config file's own errors come with a traceback: keep its first
    # line and the exception's.
    lines = [l for l in text.splitlines() if l.strip()]
    return f'{lines[0]} {lines[-1].strip()}' if 'Traceback' in text else text
  if isinstance(e, (OSError, SyntaxError, ImportError)):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    last = lines[-1] if lines else type(e).__name__
    return 'config file: ' + last.split('failure to load: ')[-1]
  # ml_collections nests the KeyError's repr: "'\\'field\\'\\nDid you..."
  message = str(e.args[0] if e.args else e).strip('"\'')
  message = message.replace('\\n', ' ').replace("\\'", "'")
  hint = ''
  for arg in argv[1:]:
    # Only fields the config file sets can be overridden; nst.sweep gives
    # the sweep section's others their defaults later.
    name = arg.split('=', 1)[0]
    field = name.removeprefix('--config.sweep.')
    if (name != field and field != 'axes' and field in sweep.SWEEP_DEFAULTS
        and field in message):
      hint = (f'; sweep.{field} can be overridden only when the config '
              f'file sets it: add c.sweep.{field} = '
              f'{sweep.SWEEP_DEFAULTS[field]!r} to its sweep section')
  return f'unknown or invalid config field: {message}{hint}'


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _RESUME.value and not _WORKDIR.value:
    print('error: --resume needs --workdir: the directory of the run to '
          'continue', file=sys.stderr)
    sys.exit(2)
  path = (Path(_WORKDIR.value) if _WORKDIR.value else
          workdir.default_path(config_flags.get_config_filename(
              flags.FLAGS['config'])))
  config = _CONFIG.value
  stop = signals.StopRequest()
  try:
    # Joining a multi-process job installs JAX's own SIGTERM handler (its
    # preemption notifier), which would take the signal from ours:
    # join first.
    joined = 'sweep' in config and sweep.initialize_distributed(
        _DISTRIBUTED.value)
    with stop:
      if joined and not _WORKDIR.value:
        raise UserError('a sweep over several processes needs --workdir: '
                        'the same directory for every process')
      workdir.run(config, path, overwrite=_OVERWRITE.value,
                  resume=_RESUME.value, should_stop=stop,
                  memory_check=_MEMORY_CHECK.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except Stopped as e:
    kept = ('the finished members and a checkpoint of the chunk in '
            'progress are' if 'sweep' in config else
            f'checkpoint and step_{e.step:05d}.png are')
    print(f'stopped after step {e.step}; {kept} in {path}; continue with '
          f'the same command and --resume --workdir {path}',
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
