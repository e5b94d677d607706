"""Command line: ``python -m nst.run --config configs/default.py``.

Flags -> ``runner.run`` (config -> members -> ``engine`` -> files) -> exit
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
import textwrap
import threading
import traceback
from pathlib import Path

from nst import backend
from nst import signals

if __name__ == '__main__':  # a Ctrl-C while JAX loads: one line, no traceback
  signal.signal(signal.SIGINT, signals.interrupted)

# pylint: disable=wrong-import-position
from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from nst import engine, fields, files, runner, sweep, workdir
from nst.errors import DiskFull, Stopped, UserError


_DEFAULT_CONFIG = fields.default_path()
# No default here: ml_collections would load it, and apply the command
# line's overrides to it, while this module is imported, where a misspelt
# field is a traceback. ``parse_flags`` names the default instead.
CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file.', lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output directory (default: runs/<config>-<time>).')
OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Allow writing into an existing non-empty workdir.')
RESUME = flags.DEFINE_bool(
    'resume', False, 'Continue the stopped run in --workdir from its '
    'checkpoint, or the stopped sweep with its unfinished members (same '
    'config).')
MEMORY_CHECK = flags.DEFINE_bool(
    'memory_check', True, 'Refuse, before anything is read or written, a '
    'run whose estimated memory (nst.memory) is more than is available; '
    '--nomemory_check skips this where the estimate is wrong for the '
    'machine.')
DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Sweeps: call jax.distributed.initialize() (auto: when Slurm, Open MPI, '
    'a TPU pod or JAX_COORDINATOR_ADDRESS describes several processes).')


HELP = ('--help', '-help', '-h', '--helpshort', '--helpfull', '-?')
FLAGS_SHOWN = ('config', 'workdir', 'overwrite', 'resume', 'memory_check',
               'distributed')


def parse_flags(argv):
  """absl's parser, with mistakes in the config file or the command line
  (a missing or broken config file, a misspelt field, a value of the wrong
  type, a stray argument) reported as one line and exit status 2 instead of
  a traceback or the usage text. ``--help``: ``usage`` (with the config
  the other flags give), exit 0."""
  end = argv.index('--') if '--' in argv else len(argv)
  wants_help = any(a in HELP for a in argv[1:end])
  argv = [a for k, a in enumerate(argv) if k >= end or a not in HELP]
  if not any(a.split('=', 1)[0] in ('--config', '-config')
             for a in argv[1:end]):
    argv = [argv[0], f'--config={_DEFAULT_CONFIG}', *argv[1:]]
  path = config_path(argv)
  try:
    # Before ml_collections opens it: a named pipe would block for ever.
    files.check_regular(path, 'config file')
    rest = flags.FLAGS(argv)
    # A config file that failed to load is reported only when the config is
    # first used: use it here.
    if not isinstance(CONFIG.value, ml_collections.ConfigDict):
      raise UserError(f'config file {path!r}: get_config() returned '
                      f'{type(CONFIG.value).__name__}; accepted is an '
                      'ml_collections.ConfigDict')
  except UserError as e:
    _fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = config_error(e, argv, path)
    if message is None:
      raise
    _fail(message)
  if len(rest) > 1:
    _fail(unexpected_argument(rest[1], argv))
  if wants_help:
    print(usage(CONFIG.value), end='')
    sys.exit(0)
  return rest


def usage(config) -> str:
  """``--help``: how to run, the flags, then every config field with its
  value in ``config`` and its meaning (``nst.fields``)."""
  lines = ['usage: python -m nst.run [--config=FILE] '
           '[--config.FIELD=VALUE ...]', '                         '
           '[--workdir=DIR] [--overwrite | --resume]', '',
           'Neural style transfer: one run, or a sweep when the config has a '
           'sweep section.', '', 'flags:']
  for name in FLAGS_SHOWN:
    flag = flags.FLAGS[name]
    value = (str(flag.default).lower() if isinstance(flag.default, bool)
             else flag.default)  # absl's default_as_str quotes: 'false'
    default = '' if flag.default in (None, '') or name == 'config' else (
        f' (default: {value})')
    lines.append(textwrap.fill(f'--{name}: {flag.help}{default}', 79,
                               initial_indent='  ',
                               subsequent_indent='      '))
  lines.append(f'  (--config defaults to {_DEFAULT_CONFIG})')
  return '\n'.join(lines) + '\n\n' + fields.help_text(config)


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def config_path(argv) -> str:
  """The config file ``argv`` names (its last ``--config``), or the
  default; without ml_collections' ``:argument`` suffix."""
  path, args = _DEFAULT_CONFIG, argv[1:]
  for i, arg in enumerate(args):
    if arg == '--':
      break
    name, eq, value = arg.partition('=')
    if name in ('--config', '-config'):
      path = value if eq else args[i + 1] if i + 1 < len(args) else path
  return path.split(':', 1)[0]


def unexpected_argument(arg: str, argv) -> str:
  """The line for an argument left over after the flags."""
  at = argv.index(arg, 1) if arg in argv[1:] else 0
  before = argv[at - 1] if at > 1 else ''
  if before.startswith('-') and '=' not in before and before != '--':
    # A boolean flag (--config.clip_pixels, --overwrite) takes no value
    # after a space.
    return (f"unexpected argument {arg!r}: a flag's value follows '=' "
            f'({before}={arg})')
  return (f'unexpected argument {arg!r}: only flags are accepted '
          '(--config=FILE, --config.FIELD=VALUE, --workdir=DIR, ...)')


def _own_error(e: BaseException, path: str) -> str | None:
  """Where and what, if ``e`` (or one it was raised while handling) came
  from the code of the file ``path``: ``line 2, in get_config: KeyError:
  'a'``."""
  target, seen = os.path.realpath(path), set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if (isinstance(e, SyntaxError) and e.filename
        and os.path.realpath(e.filename) == target):
      return f'line {e.lineno}: {type(e).__name__}: {e.msg}'
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.realpath(f.filename) == target]
    if frames:
      where = f'line {frames[-1].lineno}'
      if frames[-1].name != '<module>':
        where += f', in {frames[-1].name}'
      return f'{where}: {type(e).__name__}: {e}'
    e = e.__cause__ or e.__context__
  return None


def config_error(e: Exception, argv, path: str) -> str | None:
  """The one line for an exception from parsing the flags and loading the
  config file ``path`` (the only place that reads ml_collections' error
  texts); None for one that is not the user's (a bug)."""
  if path.endswith('.json'):
    return (f'config file {path!r} is JSON; a config is a .py file with a '
            "get_config() (a run's config.json records its values: start "
            'from configs/default.py and set those)')
  if own := _own_error(e, path):
    return f'config file {path!r}, {own}'
  if isinstance(e, AttributeError) and e.name == 'get_config':
    return f'config file {path!r} defines no get_config()'
  text = str(e)
  if isinstance(e, flags.Error):
    # An error that comes with a traceback: keep its first line and the
    # exception's.
    lines = [l for l in text.splitlines() if l.strip()]
    return f'{lines[0]} {lines[-1].strip()}' if 'Traceback' in text else text
  if isinstance(e, (OSError, SyntaxError, ImportError)):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    last = lines[-1] if lines else type(e).__name__
    return f'config file {path!r}: ' + last.split('failure to load: ')[-1]
  if not isinstance(e, (AttributeError, KeyError, TypeError, ValueError)):
    return None
  # ml_collections nests the KeyError's repr: "'\\'field\\'\\nDid you..."
  message = str(e.args[0] if e.args else e).strip('"\'')
  message = message.replace('\\n', ' ').replace("\\'", "'")
  message = message.replace("' Did you mean", "'; did you mean")
  hint = ''
  for arg in argv[1:]:  # an axis the file does not sweep
    axis = arg.split('=', 1)[0].removeprefix('--config.sweep.axes.')
    if (not arg.startswith('--config.sweep.axes.')
        or message.split(';')[0].strip("'") != axis):
      continue
    field = axis in fields.load() or axis == sweep.RATIO
    return (f'--config.sweep.axes.{axis}: the sweep of {path!r} has no '
            f'axis {axis}; only the axes the file sets can be overridden' + (
                f' (add c.sweep.axes.{axis} = (...) to it to sweep {axis})'
                if field else f', and {axis} is no config field'))
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


class Console:
  """A console stream whose failure does not cost the run: once a write
  or flush fails (a closed pipe, ``| head -1``; a closed terminal, EIO),
  the stream's descriptor is pointed at /dev/null and the run goes on
  writing its files, silently."""

  def __init__(self, stream):
    self.stream, self.lost = stream, False

  def _guard(self, action):
    if self.lost:
      return
    try:
      action()
    except OSError:
      self.lost = True
      try:  # also for Python's final flush and writes below it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)
      except (OSError, ValueError):
        pass

  def write(self, text):
    self._guard(lambda: self.stream.write(text))
    return len(text)

  def flush(self):
    self._guard(self.stream.flush)

  def __getattr__(self, name):
    return getattr(self.stream, name)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  sys.stdout, sys.stderr = Console(sys.stdout), Console(sys.stderr)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if RESUME.value and not WORKDIR.value:
    print('error: --resume needs --workdir: the directory of the run to '
          'continue', file=sys.stderr)
    sys.exit(2)
  path = (Path(WORKDIR.value).expanduser() if WORKDIR.value else
          workdir.default_path(config_flags.get_config_filename(
              flags.FLAGS['config'])))
  config = CONFIG.value
  stop = signals.StopRequest()
  try:
    # Joining a multi-process job installs JAX's own SIGTERM handler (its
    # preemption notifier), which would take the signal from ours:
    # join first.
    if 'sweep' not in config and DISTRIBUTED.value == 'on':
      raise UserError('--distributed=on is for sweeps (a config with a sweep '
                      'section); a single run is one process')
    joined = 'sweep' in config and sweep.initialize_distributed(
        DISTRIBUTED.value)
    backend.compile_cache(check_backend())
    stop.install()  # until the process exits
    if joined and not WORKDIR.value:
      raise UserError('a sweep over several processes needs --workdir: '
                      'the same directory for every process')
    runner.run(config, path, overwrite=OVERWRITE.value,
                resume=RESUME.value, should_stop=stop,
                memory_check=MEMORY_CHECK.value, argv=sys.argv)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    _exit(1 if isinstance(e, DiskFull) else 2)
  except Stopped as e:
    print(workdir.stopped_line(e, path, 'sweep' in config, sys.argv),
          file=sys.stderr, flush=True)
    # A process of a multi-process sweep may stop because another was
    # signalled; it exits as if it had been sent SIGTERM.
    _exit(128 + (stop.signal or signal.SIGTERM))
  except KeyboardInterrupt:  # before the handlers were installed
    signals.interrupted()


def check_backend() -> str:
  """Starts JAX's backend and returns its platform ('cpu', 'gpu', ...): a
  UserError if none can (``JAX_PLATFORMS`` naming a platform this machine
  lacks, e.g. 'cuda' without a GPU)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    jax.devices()
  except (RuntimeError, AssertionError, ValueError) as e:
    wanted = os.environ.get('JAX_PLATFORMS', '')
    reason = str(e).strip().splitlines()[0] if str(e).strip() else (
        'no such device here, or its jaxlib plugin is not installed')
    raise UserError(
        (f'JAX_PLATFORMS={wanted!r}: ' if wanted else '') + 'no JAX backend '
        f'could start ({reason}); unset JAX_PLATFORMS or name a platform '
        'this machine has (cpu; cuda or tpu with their jaxlib plugins '
        'installed)') from None
  return jax.default_backend()


def _exit(code: int):
  """Exits; at once if a stop left a compilation running on its thread
  (``engine.COMPILING``), rather than waiting for it or tearing the
  interpreter down under it (every file is written and closed)."""
  if any(t.name == engine.COMPILING and t.is_alive()
         for t in threading.enumerate()):
    sys.stdout.flush()
    os._exit(code)
  sys.exit(code)


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  app.run(main, flags_parser=parse_flags)
