"""The one owner of a run's folder: its layout, its lock, ``--overwrite``
and ``--resume`` (``nst.runner`` runs a config into it).

A single run writes
  config.json      the resolved config
  metrics.jsonl    one row per log step: member, step, size, loss, content,
                   style, tv, evals_per_step, steps_per_s, time_s (since
                   the chunk started), left_s (estimated, of the run)
  report.html      the page to watch the run on (``nst.page``), from the
                   first log step on
  step_00050.png   the output every ``save_every`` steps, and when stopped
  final.png        the result
  last_finite_NNNNN.png  instead, if the loss became non-finite: the output
                   of the latest log step whose loss was finite
  checkpoint.npz   every ``checkpoint_every`` steps and when SIGINT or
                   SIGTERM stops the run: ``--resume`` continues from it,
                   and the steps after it are the same as an unstopped run's
A sweep writes config.json, metrics.jsonl and checkpoint.npz likewise, and
  members/NNNN.png           member NNNN's result (+ .json: its config;
                             .result.json: its losses and fingerprint;
                             .step_SSSSS.png, .last_finite_SSSSS.png)
  results.csv, contact_sheet*.png, index.html   (``nst.report``)
  report.html                (``nst.page``)

Guarantees: a workdir holding files is refused unless ``--overwrite``
(which first deletes what an earlier run wrote there: ``OUTPUTS``, and
nothing else, only where config.json shows a run was started) or
``--resume`` (not both), or unless it holds a run of the same config
that ended (a crash, a kill) before it kept a checkpoint or a result:
then the same command, or ``--resume``, starts it again there. A second
process on the same workdir is
refused (``.lock``, naming the holder's pid); ``--resume`` needs the same
config, keeps a finished sweep member only if its config and input files
(``fingerprint``) are the ones it ran with, and recomputes any other.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from nst import checkpoint, engine, files, images, page, spec, sweep
from nst.errors import Stopped, UserError, cannot_write

LOCK = '.lock'
# What runs write here (``--overwrite`` deletes these, and nothing else).
OUTPUTS = ('config.json', 'metrics.jsonl', 'final.png', 'step_*.png',
           'last_finite_*.png', checkpoint.NAME, 'members', 'results.csv',
           'contact_sheet*.png', 'index.html', page.NAME, 'figure*.png',
           '.*.tmp')


# What a run writes before it keeps a checkpoint or a result (a restart
# deletes these only: not figures or sheets a user may have added).
STARTED = ('config.json', 'metrics.jsonl', 'step_*.png', 'members', '.*.tmp')


def _own_files(path: Path, patterns=OUTPUTS) -> list[Path]:
  found = set()
  for pattern in patterns:
    found.update(path.glob(pattern))
  return sorted(found)


def _file_hash(path: Path, cache={}) -> str:  # pylint: disable=dangerous-default-value
  st = path.stat()
  key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
  if key not in cache:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
    cache[key] = digest.hexdigest()
  return cache[key]


def input_sources(config) -> list[tuple[str, str]]:
  """(field, source) of every input a member reads: content, styles,
  masks, init image."""
  return ([('content_image', config.content_image)]
          + [('style_image', s) for s in spec.style_specs(config)]
          + [('style_masks', m) for m in spec.mask_specs(config)]
          + [('init', config.init)])


def fingerprint(config) -> str:
  """A hash of a member's resolved config and the bytes of every input
  file it reads (``input_sources``): equal fingerprints, equal runs."""
  sources = [source for _, source in input_sources(config)]
  digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True,
                                     default=str).encode())
  for source in sources:
    path = Path(source).expanduser()
    digest.update(f'\0{source}\0'.encode())
    if not images.is_builtin(source) and path.is_file():
      digest.update(_file_hash(path).encode())
  return digest.hexdigest()[:32]


def default_path(config_path: str) -> Path:
  """runs/<config>-<time>, made unique with a -2, -3... suffix."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  base = Path('runs') / f'{Path(config_path).stem}-{stamp}'
  path, n = base, 1
  while path.exists():
    n += 1
    path = base.with_name(f'{base.name}-{n}')
  return path


class Workdir:
  """A run's folder, opened for a new run, ``overwrite`` or ``resume``.

  ``lead``: this process writes the shared files and holds the lock (in a
  multi-process sweep, process 0); the others write only their members'
  images. Opening checks everything before writing anything.
  """

  def __init__(self, path: str | os.PathLike, *, sweep: bool,
               overwrite: bool = False, resume: bool = False,
               lead: bool = True, config=None):
    self.path, self.sweep, self.lead = Path(path), sweep, lead
    self.resume = resume
    # A run of ``config`` that ended (a crash, a kill, a stop) before it
    # kept anything to continue from starts again here, by a rerun of the
    # same command or by --resume.
    self.restart = False
    self._config, self._lock = config, None
    p = self.path
    if resume and overwrite:
      raise UserError('--resume continues the run in --workdir and '
                      '--overwrite deletes it: give one of them')
    if p.exists() and not p.is_dir():
      raise UserError(f'workdir {str(p)!r} exists and is not a directory')
    if resume:
      if not p.is_dir():
        raise UserError(f'nothing to resume in {str(p)!r}: no such '
                        'directory')
      if not sweep and config is not None and self._ended_early(config):
        self.resume, self.restart = False, True
    elif self._holds_files() and not overwrite and (
        config is not None and self._ended_early(config)):
      self.restart = True
    elif self._holds_files() and not overwrite:
      raise UserError(f'workdir {str(p)!r} already holds files; choose '
                      'another --workdir, pass --resume to continue a '
                      'stopped run there, or --overwrite')
    elif self._holds_files() and not self._holds_a_run():
      raise UserError(f'--overwrite deletes an earlier run\'s outputs, but '
                      f'{str(p)!r} holds files and no config.json of a run; '
                      'choose another --workdir')

  def _holds_a_run(self) -> bool:
    """Whether config.json is a run's config (--overwrite deletes only
    where a run was started)."""
    saved = self._saved_config()
    return saved is not None and 'content_image' in saved

  def _ended_early(self, config) -> bool:
    """Whether this folder holds a run of ``config`` that kept nothing
    to continue from or to keep: no checkpoint, no result (final.png,
    last_finite_*.png; a sweep: no finished member)."""
    p = self.path
    kept = [p / checkpoint.NAME, p / 'final.png', p / 'results.csv',
            *p.glob('last_finite_*.png'), *p.glob('members/*.result.json')]
    return self._saved_config() == json.loads(config.to_json()) and not any(
        f.exists() for f in kept)

  def _saved_config(self) -> dict | None:
    """config.json here as a dict; None if it is missing or unreadable."""
    try:
      saved = json.loads(self._read('config.json'))
    except (OSError, ValueError):
      return None
    return saved if isinstance(saved, dict) else None

  def _read(self, name: str) -> str:
    """The text of the file ``name`` here; a UserError if it is there but
    not a regular file (a named pipe would block ``open``)."""
    path = self.path / name
    if path.exists():
      files.check_regular(path, 'workdir file')
    return path.read_text()

  def _holds_files(self) -> bool:
    """Anything there but the lock and empty folders (another process of
    the same sweep may have made ``members/``)."""
    return self.path.is_dir() and any(
        e.name != LOCK and not (e.is_dir() and not any(e.iterdir()))
        for e in self.path.iterdir())

  def open(self, config_json: str, overwrite: bool = False) -> 'Workdir':
    """Creates the folder, takes its lock, and for ``overwrite`` deletes
    an earlier run's outputs; for a new run writes config.json."""
    self.make_dir(self.path)
    if self.lead:
      self._take_lock()
      if self.restart and not self._ended_early(self._config):
        raise UserError(f'workdir {str(self.path)!r} changed while this run '
                        'started (a run there kept a checkpoint or a '
                        'result); choose another --workdir')
      if overwrite or self.restart:
        self._delete_outputs(OUTPUTS if overwrite else STARTED)
      elif not self.resume and self._holds_files():
        raise UserError(f'workdir {str(self.path)!r} filled up while this '
                        'run started; choose another --workdir')
      if not self.resume:
        images.write_atomic(self.path / 'config.json', config_json.encode())
    return self

  def check_inputs_survive(self, configs) -> None:
    """With ``--overwrite``: a UserError if an input file of ``configs``
    (an image, a mask, an init image, weights) is one of the earlier
    outputs that ``--overwrite`` would delete."""
    doomed = {p.resolve() for p in _own_files(self.path, OUTPUTS)}
    for old in list(doomed):
      if old.name == 'members' and old.is_dir():
        doomed |= {f.resolve() for f in old.iterdir()}
    for config in configs:
      for field, source in [*input_sources(config),
                            ('weights', config.weights)]:
        if source and Path(source).expanduser().resolve() in doomed:
          raise UserError(
              f'{field} {source!r} is an output of the earlier run in '
              f'{str(self.path)!r}, which --overwrite would delete: copy '
              'it elsewhere first, or choose another --workdir')

  def _delete_outputs(self, patterns=OUTPUTS) -> None:
    """What an earlier run wrote here (``patterns``; in members/, only
    NNNN.* files); nothing else."""
    try:
      for old in _own_files(self.path, patterns):
        if old.name == 'members' and old.is_dir() and not old.is_symlink():
          for f in old.iterdir():
            if f.name[:4].isdigit() and f.name[4:5] == '.' and f.is_file():
              f.unlink()
          if not any(old.iterdir()):
            old.rmdir()
        elif old.is_file() or old.is_symlink():
          old.unlink()
    except OSError as e:
      raise UserError(f'--overwrite cannot delete {e.filename!r}: '
                      f'{e.strerror or e}') from None

  @staticmethod
  def make_dir(path: Path) -> None:
    try:
      path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise cannot_write(path, e, 'create') from None

  def _take_lock(self) -> None:
    lock = self.path / LOCK
    try:
      fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
      raise UserError(f'cannot write in workdir {str(self.path)!r}: '
                      f'{e.strerror or e}') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 64).decode(errors='replace').strip() or '?'
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        raise UserError(f'workdir {str(self.path)!r} is in use by process '
                        f'{holder}; wait for it to end or choose another '
                        '--workdir') from None
      raise
    try:
      os.ftruncate(fd, 0)
      os.write(fd, f'{os.getpid()}\n'.encode())
    except OSError as e:
      os.close(fd)
      raise cannot_write(lock, e) from None
    self._lock = fd  # held until this process ends

  def close(self) -> None:
    if self._lock is not None:
      os.close(self._lock)
      self._lock = None

  # --- Names ---------------------------------------------------------------

  def member_file(self, member: spec.Member, suffix: str) -> Path:
    return self.path / 'members' / f'{member.index:04d}{suffix}'

  def image_path(self, member: spec.Member) -> Path:
    return (self.member_file(member, '.png') if self.sweep else
            self.path / 'final.png')

  def step_path(self, member: spec.Member, step: int, kind: str = 'step'
                ) -> Path:
    return (self.member_file(member, f'.{kind}_{step:05d}.png') if self.sweep
            else self.path / f'{kind}_{step:05d}.png')

  @property
  def checkpoint_path(self) -> Path:
    return self.path / checkpoint.NAME

  # --- Resuming ------------------------------------------------------------

  def check_config(self, config) -> None:
    """``--resume`` needs the config the stopped run was started with."""
    try:
      saved = json.loads(self._read('config.json'))
    except FileNotFoundError:
      raise UserError(f'nothing to resume in {str(self.path)!r}: no run '
                      'was started there (it has no config.json)') from None
    except (OSError, ValueError) as e:
      raise UserError(f'nothing to resume in {str(self.path)!r}: cannot '
                      f'read its config.json ({e})') from None
    checkpoint.check_same_config(saved, config, self.path)

  def pending(self, members: list[spec.Member]
              ) -> checkpoint.Checkpoint | None:
    """The checkpoint to continue from, if its members' fingerprints are
    still theirs (a single run: a UserError otherwise; a sweep: its chunk
    runs again from the start)."""
    path = self.checkpoint_path
    if self.sweep and not path.exists():
      return None
    if not path.exists() and (self.path / 'final.png').exists():
      raise UserError(f'the run in {str(self.path)!r} has finished '
                      '(final.png): nothing to resume; --overwrite runs it '
                      'again')
    ckpt = checkpoint.load(path)
    by_index = {m.index: m for m in members}
    indices = ckpt.extra.get('members', np.zeros(0, int)).tolist()
    saved = ckpt.extra.get('fingerprints', np.zeros(0, str)).tolist()
    current = [fingerprint(by_index[i].config) if i in by_index else ''
               for i in indices]
    if indices and saved == current:
      return ckpt
    if not self.sweep:
      raise UserError(f'the input images of the run in {str(self.path)!r} '
                      f'changed since it was stopped; {checkpoint.RESTART}')
    print(f'note: {path} was made from other inputs or members; its chunk '
          'runs again from the start', flush=True)
    return None

  def finished(self, members: list[spec.Member], pending=None
               ) -> dict[int, engine.Result]:
    """{index: result} of the sweep members a stopped run finished with
    the same config and input files; the files of any other member are
    deleted (it runs again), but for those of the chunk ``pending``
    continues (its images up to the checkpoint's step stay)."""
    continued = (set(pending.extra['members'].tolist()) if pending else
                 set())
    out = {}
    for m in members:
      try:
        r = json.loads(self._read(f'members/{m.index:04d}.result.json'))
        result = engine.Result(m, r['metrics'], r['status'], r['wall_s'],
                               r['steps_per_s'], r['group'], r['chunk'],
                               written=bool(r['image']), image=r['image'])
        same = r['fingerprint'] == fingerprint(m.config)
      except (OSError, ValueError, KeyError, TypeError, UserError):
        continue  # it runs again
      if same and (not result.image or (self.path / result.image).is_file()):
        out[m.index] = result
    if self.lead:
      for f in (self.path / 'members').glob('*'):
        index = f.name.split('.')[0]
        if (f.is_file() and index.isdigit() and int(index) not in out
            and int(index) not in continued):
          f.unlink()
    return out


def stopped_line(e: Stopped, path: Path, is_sweep: bool,
                 argv: list[str] | None = None) -> str:
  """What a stopped run kept, exactly, and how to continue it: with
  ``argv`` (the stopped process's command line), the command itself."""
  def command(resume: bool) -> str:
    if argv is None:
      return ('the same command and --resume --workdir '
              f'{path}' if resume else f'the same command, in {path}')
    return again_command(argv, path, resume)
  resume = f'continue with: {command(True)}'
  if is_sweep:
    kept = ('the finished members and a checkpoint of the chunk in '
            'progress are' if e.checkpointed else
            'the finished members are (the chunk in progress kept nothing '
            'to continue from: it runs again)')
    return f'stopped after step {e.step}; {kept} in {path}; {resume}'
  if e.checkpointed:
    kept = (f'checkpoint and step_{e.step:05d}.png are' if e.saved else
            'checkpoint is')
    return f'stopped after step {e.step}; {kept} in {path}; {resume}'
  kept = (f'step_{e.step:05d}.png is in {path}, but no checkpoint (the '
          'image was not finite)' if e.saved else 'nothing was kept')
  return (f'stopped after step {e.step}; {kept}; start it again in {path} '
          f'with: {command(False)}')


def again_command(argv: list[str], path: Path, resume: bool,
                  python: str | None = None) -> str:
  """The command line that continues (``resume``) or restarts the run in
  ``path``: ``python -m nst.run`` with the flags of ``argv[1:]`` but
  --workdir, --resume and --overwrite (and a ``--`` with what follows),
  then ``--resume`` if ``resume`` and ``--workdir path``; quoted for a
  POSIX shell. ``python``: this interpreter, as a path relative to the
  current directory when it lies below it (``.venv/bin/python``)."""
  kept, value_next = [], False
  for arg in argv[1:]:
    if arg == '--':
      break
    if value_next:  # the value of a '--workdir DIR'
      value_next = False
      continue
    name = arg.lstrip('-').split('=', 1)[0] if arg.startswith('-') else ''
    if name == 'workdir' and '=' not in arg:
      value_next = True
    elif name not in ('workdir', 'resume', 'noresume', 'overwrite',
                      'nooverwrite'):
      kept.append(arg)
  if python is None:
    python = sys.executable or 'python'
    below = os.path.relpath(python)
    python = below if not below.startswith('..') else python
  return shlex.join([python, '-m', 'nst.run', *kept,
                     *(['--resume'] if resume else []), '--workdir',
                     str(path)])
