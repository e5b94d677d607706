"""The one owner of a run's folder: its layout, its lock, ``--overwrite``,
``--resume``, and everything written there.

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

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from nst import (checkpoint, engine, files, images, memory, page, report,
                 spec, sweep, targets)
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


def fingerprint(config) -> str:
  """A hash of a member's resolved config and the bytes of every input
  file it reads (content, styles, masks, init image): equal fingerprints,
  equal runs."""
  sources = [config.content_image, *spec.style_specs(config),
             *spec.mask_specs(config), config.init]
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
      for field in ('content_image', 'style_image', 'style_masks', 'init',
                    'weights'):
        for source in str(config[field]).split(','):
          source = source.strip()
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


class Writer(engine.Callbacks):
  """Writes what the engine hands out into a ``Workdir``."""

  def __init__(self, workdir: Workdir, config_json: str,
               members: list[spec.Member], *, quiet: bool = False,
               report_page: page.Page | None = None):
    self.workdir, self.config_json, self.quiet = workdir, config_json, quiet
    self.members = {m.index: m for m in members}
    self.results: list[engine.Result] = []
    self._metrics = self._open_metrics() if workdir.lead else None
    self.page = report_page if workdir.lead else None

  def _open_metrics(self):
    path = self.workdir.path / 'metrics.jsonl'
    if path.exists():  # a named pipe would block open
      files.check_regular(path, 'workdir file')
    try:
      return open(path, 'a')
    except OSError as e:
      raise cannot_write(path, e) from None

  def keep_rows(self, kept: set[int], pending) -> None:
    """On resume: drops the metrics rows that will be written again."""
    self._metrics.close()
    checkpoint.keep_rows(
        self.workdir.path / 'metrics.jsonl', lambda r: r.get('member', 0) in
        kept or pending is not None and r.get('member', 0) in
        pending.extra['members'].tolist() and r['step'] <= pending.done)
    self._metrics = self._open_metrics()

  def progress(self, line):
    if not self.quiet:
      print(line, flush=True)
    self._page(lambda p: p.write())

  def _page(self, action) -> None:
    """``action(page)`` if this process writes the page. The page is for
    watching: a write that fails (a full disk) costs the run nothing; the
    run's own files report the disk."""
    if self.page is not None:
      with contextlib.suppress(OSError, UserError):  # (cannot_write's)
        action(self.page)

  def end(self, state: str, note: str = '') -> None:
    """The page's last word: 'finished', 'stopped', 'diverged' or
    'failed'."""
    self._page(lambda p: p.end(state, note))

  def log(self, row):
    self._page(lambda p: p.log(row))
    if self._metrics:
      try:
        self._metrics.write(json.dumps(row) + '\n')
        self._metrics.flush()
      except OSError as e:  # a half-written row is dropped on --resume
        self._metrics, metrics = None, self._metrics
        with contextlib.suppress(OSError):  # what it holds is lost
          metrics.close()
        raise cannot_write(self.workdir.path / 'metrics.jsonl', e) from None

  def save(self, member, step_, image):
    path = self.workdir.step_path(member, step_)
    images.save(path, image)
    self._page(lambda p: p.save(member.index, step_, str(
        path.relative_to(self.workdir.path))))

  def checkpoint(self, ckpt):
    if self.workdir.lead:
      ckpt.extra['fingerprints'] = np.array(
          [fingerprint(self.members[i].config)
           for i in ckpt.extra['members'].tolist()])
      checkpoint.save(self.workdir.checkpoint_path, ckpt, self.config_json)

  def image(self, member, image):
    images.save(self.workdir.image_path(member), image)
    if self.workdir.sweep:
      images.write_atomic(self.workdir.member_file(member, '.json'),
                          member.config.to_json(indent=2).encode())

  def result(self, result):
    if result.last_finite is not None:
      step_, image = result.last_finite
      images.save(self.workdir.step_path(result.member, step_,
                                         'last_finite'), image)
    name = self.workdir.image_path(result.member)
    result.image = (str(name.relative_to(self.workdir.path))
                    if result.status == 'ok' else '')
    self.results.append(result)
    self._page(lambda p: (p.result(result), p.write(force=True)))
    if self.workdir.sweep and self.workdir.lead and result.status != 'ok':
      kept = (f'; its output of step {result.last_finite[0]} is '
              + str(self.workdir.step_path(result.member, result.last_finite[
                  0], 'last_finite').relative_to(self.workdir.path))
              if result.last_finite else '')
      self.progress(f'member {result.member.index} '
                    f'({sweep.describe(result.member.values)}) diverged: '
                    f'{engine.diverged(result)}{kept}')
    if self.workdir.sweep and self.workdir.lead:
      record = {'metrics': result.metrics, 'status': result.status,
                'wall_s': result.wall_s, 'steps_per_s': result.steps_per_s,
                'group': result.group, 'chunk': result.chunk,
                'image': result.image,
                'fingerprint': fingerprint(result.member.config)}
      images.write_atomic(self.workdir.member_file(result.member,
                                                   '.result.json'),
                          json.dumps(record).encode())

  def close(self) -> None:
    if self._metrics:
      self._metrics, metrics = None, self._metrics
      try:
        metrics.close()
      except OSError as e:
        raise cannot_write(self.workdir.path / 'metrics.jsonl', e) from None


def finish_sweep(workdir: Workdir, axes: dict[str, tuple],
                 results: list[engine.Result], settings) -> None:
  """results.csv, contact sheets and index.html; the checkpoint, now
  used, is deleted."""
  results = sorted(results, key=lambda r: r.member.index)
  report.write_all(workdir.path, axes, results, rows=settings.rows,
                   cols=settings.cols, zipped=settings.zip)
  workdir.checkpoint_path.unlink(missing_ok=True)


def _together(action: Callable[[], Any], refused: str) -> None:
  """Runs ``action``; where it raises a UserError on any process, every
  process raises (the others ``UserError(refused)``), so that none is left
  waiting for the rest."""
  error = None
  try:
    action()
  except UserError as e:
    error = e
  if engine.any_process(error is not None) and error is None:
    error = UserError(refused)
  if error is not None:
    raise error


def run(config, path: Path, *, overwrite: bool = False,
        resume: bool = False, should_stop=None, devices=None,
        memory_check: bool = True) -> list[engine.Result]:
  """Checks everything, then runs ``config`` (one run, or a sweep) into
  the folder ``path``; returns the members' results. A single run's
  non-finite loss raises ``Diverged`` once its last finite output is kept.
  ``memory_check``: a run whose estimated memory is more than is available
  (``nst.memory.check``) is refused before any image is read at size."""
  is_sweep = 'sweep' in config
  folder = Workdir(path, sweep=is_sweep, overwrite=overwrite,
                   resume=resume, lead=jax.process_index() == 0,
                   config=config)
  resume = folder.resume
  if resume:
    folder.check_config(config)
  loader = engine.Loader()
  entries = sweep.member_configs(config)[1] if is_sweep else []
  configs = [cfg for _, _, cfg in entries] if is_sweep else [config]
  if overwrite:
    folder.check_inputs_survive(configs)
  final = path / 'final.png'
  if not is_sweep and final.is_dir() and not final.is_symlink():
    raise UserError(f'{str(final)!r} is a directory, where the result is '
                    'to be written: move it or choose another --workdir')
  chunking = _chunking(config, configs, devices, memory_check)
  if memory_check:  # before resolving: that reads the images at size
    _together(lambda: memory.check(
        configs, chunk_size=chunking[0],
        devices=len(devices or jax.devices()) if is_sweep else 1),
              'another process refused the run for its memory (its error '
              'says why)')
  checked = {}

  def check_inputs():
    if is_sweep:
      members = sweep.resolve_members(entries, loader.images_for)
    else:
      members = [spec.resolve(config, loader.images_for(config))]
    checked['pending'] = folder.pending(members) if resume else None
    for spec_, network in {(m.program.weights, m.program.network)
                           for m in members}:
      loader.params(spec_, network)  # a bad weights file or cache: now
    for m in members:  # their images at every scale, before anything is
      try:             # written (the loader keeps them for the run)
        for px in sorted({max(shape[:2]) for shape, _ in m.program.plan}):
          targets.load_inputs(m.config, px, loader.images_for(m.config))
      except UserError as e:
        raise UserError(f'sweep member {m.index} ('
                        f'{sweep.describe(m.values)}): {e}' if is_sweep
                        else str(e)) from None
    checked['members'] = members

  # Nobody writes before everyone has checked; all stop if one refused.
  _together(check_inputs, 'another process refused the run for its inputs '
            '(its error says why)')
  members, pending = checked['members'], checked['pending']
  try:  # all stop if process 0 refused the folder
    _together(lambda: folder.open(config.to_json(indent=2),
                                  overwrite=overwrite),
              'process 0 refused the workdir (its error says why)')
  except UserError:
    folder.close()
    raise
  if folder.restart and folder.lead:
    print(f'note: the run of this config in {path} ended before it kept '
          'anything to continue from; it starts again there (its step '
          'images and metrics are replaced)', flush=True)
  if folder.sweep:  # every process writes its members' images there
    folder.make_dir(folder.path / 'members')
  try:
    return _run_members(config, folder, members, loader, resume=resume,
                        pending=pending, should_stop=should_stop,
                        devices=devices, chunking=chunking)
  finally:
    folder.close()


def _chunking(config, configs, devices, memory_check: bool
              ) -> tuple[int, str | None]:
  """A sweep's members per chunk (``sweep.chunk_size``, or when it is 0
  ``engine.choose_chunk``'s) and the line saying why it was chosen; a
  single run: (0, None)."""
  if 'sweep' not in config:
    return 0, None
  chunk_size = sweep.settings(config).chunk_size
  if chunk_size:
    return chunk_size, None
  return engine.choose_chunk(configs, len(devices or jax.devices()),
                             memory_check=memory_check)


def _run_members(config, folder, members, loader, *, resume, pending,
                 should_stop, devices, chunking) -> list[engine.Result]:
  is_sweep, lead, path = folder.sweep, folder.lead, folder.path
  kept = folder.finished(members, pending) if resume and is_sweep else {}
  groups = sweep.group(members)
  chunk_size, why = chunking
  if pending is not None and why:  # chosen: keep the stopped run's chunks
    chunk_size, why = pending.image.shape[0], (
        f'sweep: chunks of {pending.image.shape[0]}, as in the stopped run')
  if is_sweep:  # the engine skips only chunks kept whole: so do the rows
    devices_n = len(devices or jax.devices())
    whole = [chunk for g in groups for chunk in engine.chunk_members(
        g, chunk_size, devices_n)[0] if all(m.index in kept for m in chunk)]
    kept = {m.index: kept[m.index] for chunk in whole for m in chunk}
    chunks = [[m.index for m in chunk] for g in groups
              for chunk in engine.chunk_members(g, chunk_size, devices_n)[0]]
    if pending and pending.extra['members'].tolist() not in chunks:
      print(f'note: {folder.checkpoint_path} holds a chunk this run does '
            'not make; it runs again from the start', flush=True)
      pending = None
  writer = Writer(folder, config.to_json(indent=2), members,
                  report_page=_report_page(config, folder, members) if lead
                  else None)
  if resume and lead:
    writer.keep_rows(set(kept), pending)
    _seed_page(writer.page, folder, members, kept)
  program = members[0].program
  if lead:
    if is_sweep:
      print(f'{len(members)} members in {len(groups)} group(s) on '
            f'{len(devices or jax.devices())} device(s), '
            f'{jax.process_count()} process(es) -> {path}'
            + (f' ({len(kept)} finished before, kept)' if resume else ''),
            flush=True)
      if why:
        print(why, flush=True)
    else:
      h, w = program.plan[-1][0][:2]
      steps = ' + '.join(f'{n} at {max(shape[:2])} px'
                         for shape, n in program.plan[:-1])
      print(f'{w}x{h} px, {steps + " + " if steps else ""}'
            f'{program.plan[-1][1]} steps of {program.optimizer} -> {path}'
            + (f' (resuming after step {pending.done})' if pending else ''),
            flush=True)
  try:
    results = engine.run(
        groups, loader=loader, devices=devices if is_sweep else (
            devices or jax.devices())[:1],
        chunk_size=chunk_size, callbacks=writer, should_stop=should_stop,
        resume=pending, kept=kept)
  except Stopped as e:
    writer.end('stopped', f'after step {e.step}; continue with the same '
               f'command and --resume --workdir {path}')
    raise
  except Exception as e:
    writer.end('failed', str(e) if isinstance(e, UserError) else
               f'{type(e).__name__}: {e}')
    raise
  finally:
    writer.close()
  if jax.process_count() > 1:  # every image is written before the sheets
    multihost_utils.sync_global_devices('nst.run: members written')
  if is_sweep:
    if lead:
      finish_sweep(folder, sweep.axes(config), results,
                   sweep.settings(config))
      bad = sum(r.status != 'ok' for r in results)
      writer.end('finished', f'{len(results) - bad} of {len(results)} '
                 'members finished' + (f', {bad} diverged' if bad else ''))
      print(f'wrote {path / "results.csv"}, {path / "index.html"} and '
            f'{path / page.NAME}', flush=True)
  else:
    [result] = results
    if result.status != 'ok':
      error = engine.diverged(result)
      if result.last_finite:
        kept_file = folder.step_path(result.member, result.last_finite[0],
                                     'last_finite')
        error = UserError(f'{error}; the output of step '
                          f'{result.last_finite[0]} is in {kept_file}')
      writer.end('diverged', f'{error}')
      raise error
    folder.checkpoint_path.unlink(missing_ok=True)
    writer.end('finished', f'wrote {result.image}')
    print(f'wrote {folder.image_path(result.member)}', flush=True)
  return results


def _report_page(config, folder: Workdir, members) -> page.Page:
  """The report page of a run or a sweep in ``folder``."""
  is_sweep = 'sweep' in config
  return page.Page(folder.path, members, config,
                   axes=sweep.axes(config) if is_sweep else None,
                   settings=sweep.settings(config) if is_sweep else None,
                   options=targets.image_options(config))


def _seed_page(report_page: page.Page, folder: Workdir, members,
               kept: dict) -> None:
  """A resumed run's page starts with what the stopped run left: its
  metrics rows, saved steps and kept results."""
  for row in page.read_rows(folder.path / 'metrics.jsonl'):
    report_page.log(row)
  for m in members:
    first = folder.step_path(m, 0)
    for step_path in sorted(first.parent.glob(
        first.name.replace('00000', '[0-9]' * 5))):
      step_ = int(step_path.stem.rsplit('_', 1)[1])
      report_page.save(m.index, step_, str(step_path.relative_to(
          folder.path)))
    if m.index in kept:
      report_page.result(kept[m.index])
