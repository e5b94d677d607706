"""Running a config into its folder: one run or a sweep, start to end.

``run`` checks everything (the config, every member's images at every
scale, the weights, the memory) before anything is written, opens the
``nst.workdir.Workdir`` (its layout, lock, ``--overwrite`` and
``--resume`` are that module's), chooses the sweep's chunks, hands the
members to ``nst.engine`` and has a ``Writer`` put what the engine hands
out into the folder: metrics rows, step images, checkpoints, results and
``report.html`` (``nst.page``); a sweep ends with its results.csv,
contact sheets and index.html (``nst.report``).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from nst import (backend, checkpoint, engine, files, images, memory, page,
                 report, sharding, spec, sweep, targets, workdir)
from nst.errors import Stopped, UserError, cannot_write


class Writer(engine.Callbacks):
  """Writes what the engine hands out into a ``workdir.Workdir``."""

  def __init__(self, folder: workdir.Workdir, config_json: str,
               members: list[spec.Member], *, quiet: bool = False,
               report_page: page.Page | None = None):
    self.workdir, self.config_json, self.quiet = folder, config_json, quiet
    self.members = {m.index: m for m in members}
    self.results: list[engine.Result] = []
    self._metrics = self._open_metrics() if folder.lead else None
    self.page = report_page if folder.lead else None
    self.ended = False
    self._page_error = ''

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
    self.with_page(lambda p: p.write())

  def with_page(self, action) -> None:
    """``action(page)`` if this process writes the page. The page is for
    watching: a write that fails (a full disk) costs the run nothing; the
    run's own files report the disk."""
    if self.page is None:
      return
    try:
      action(self.page)
    except (OSError, UserError) as e:  # cannot_write's: a full disk
      if str(e) != self._page_error:   # once, not at every step
        self._page_error = str(e)
        print(f'note: {page.NAME} was not written ({e}); it shows an '
              'earlier state until a later write succeeds; the run goes '
              'on', flush=True)
    except Exception as e:  # pylint: disable=broad-except
      self.page = None      # a bug of the page's: the run goes on
      print(f'note: {page.NAME} is no longer written ({type(e).__name__}: '
            f'{e})', flush=True)

  def end(self, state: str, note: str = '') -> None:
    """The page's last word: 'finished', 'stopped', 'diverged' or
    'failed' (the first said stays)."""
    if not self.ended:
      self.ended = True
      self.with_page(lambda p: p.end(state, note))

  def log(self, row):
    self.with_page(lambda p: p.log(row))
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
    self.with_page(lambda p: p.save(member.index, step_, str(
        path.relative_to(self.workdir.path))))

  def checkpoint(self, ckpt):
    if self.workdir.lead:
      ckpt.extra['fingerprints'] = np.array(
          [workdir.fingerprint(self.members[i].config)
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
    self.with_page(lambda p: (p.result(result), p.write()))
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
                'fingerprint': workdir.fingerprint(result.member.config)}
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


def finish_sweep(folder: workdir.Workdir, axes: dict[str, tuple],
                 results: list[engine.Result], settings) -> None:
  """results.csv, contact sheets and index.html; the checkpoint, now
  used, is deleted."""
  results = sorted(results, key=lambda r: r.member.index)
  report.write_all(folder.path, axes, results, rows=settings.rows,
                   cols=settings.cols, zipped=settings.zip)
  folder.checkpoint_path.unlink(missing_ok=True)


def _together(action: Callable[[], Any], refused: str) -> Any:
  """``action()``; where it raises a UserError on any process, every
  process raises (the others ``UserError(refused)``), so that none is left
  waiting for the rest."""
  error = value = None
  try:
    value = action()
  except UserError as e:
    error = e
  if sharding.any_process(error is not None) and error is None:
    error = UserError(refused)
  if error is not None:
    raise error
  return value


def run(config, path: Path, *, overwrite: bool = False,
        resume: bool = False, should_stop=None, devices=None,
        memory_check: bool = True, argv: list[str] | None = None
        ) -> list[engine.Result]:
  """Checks everything, then runs ``config`` (one run, or a sweep) into
  the folder ``path``; returns the members' results. A single run's
  non-finite loss raises ``Diverged`` once its last finite output is kept.
  ``memory_check``: a run whose estimated memory is more than is available
  (``nst.memory.check``) is refused before any image is read at size.
  ``argv``: the command line that started the run, for the page of a
  stopped run to show the command that continues it."""
  backend.setup()  # when this is the process's first use of JAX
  is_sweep = 'sweep' in config
  folder = workdir.Workdir(path, sweep=is_sweep, overwrite=overwrite,
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
  # Nobody writes before everyone has checked; all stop if one refused.
  members, pending = _together(
      lambda: _check_inputs(config, entries, loader, folder, resume),
      'another process refused the run for its inputs (its error says why)')
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
                        devices=devices, chunking=chunking, argv=argv)
  finally:
    folder.close()


def _check_inputs(config, entries, loader, folder, resume: bool):
  """The run's members, resolved, and with ``resume`` the checkpoint to
  continue from; everything they read is checked now, before anything is
  written: the checkpoint, the weights, and each member's images at every
  scale (the loader keeps them for the run)."""
  is_sweep = 'sweep' in config
  members = (sweep.resolve_members(entries, loader.images_for) if is_sweep
             else [spec.resolve(config, loader.images_for(config))])
  pending = folder.pending(members) if resume else None
  for spec_, network in {(m.program.weights, m.program.network)
                         for m in members}:
    loader.params(spec_, network)  # a bad weights file or cache: now
  for m in members:
    try:
      for px in sorted({max(shape[:2]) for shape, _ in m.program.plan}):
        targets.load_inputs(m.settings, px, loader.images_for(m.settings))
    except UserError as e:
      raise UserError(f'sweep member {m.index} ({sweep.describe(m.values)})'
                      f': {e}' if is_sweep else str(e)) from None
  return members, pending


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
                 should_stop, devices, chunking, argv
                 ) -> list[engine.Result]:
  is_sweep, lead, path = folder.sweep, folder.lead, folder.path
  kept = folder.finished(members, pending) if resume and is_sweep else {}
  groups = sweep.group(members)
  chunk_size, why = chunking
  if pending is not None and why:  # chosen: keep the stopped run's chunks
    chunk_size, why = pending.image.shape[0], (
        f'sweep: chunks of {pending.image.shape[0]}, as in the stopped run')
  if is_sweep and pending:  # the chunks of the members left to run
    devices_n = len(devices or jax.devices())
    slots = {}  # member indices -> slots, of each chunk
    for g in groups:
      chunks, size = engine.chunk_members(g, chunk_size, devices_n, kept)
      slots |= {tuple(m.index for m in c): size for c in chunks}
    members_ = tuple(pending.extra['members'].tolist())
    if all(i in kept for i in members_):  # a chunk finished since
      pending = None
    elif members_ not in slots:
      print(f'note: {folder.checkpoint_path} holds a chunk this run does '
            'not make (another sweep.chunk_size?); its members run again '
            'from the start', flush=True)
      pending = None
    elif slots[members_] != pending.image.shape[0]:
      print(f'note: {folder.checkpoint_path} holds a chunk of '
            f'{pending.image.shape[0]} slots; on {devices_n} device(s) this '
            f'run makes it {slots[members_]}; its members run again from '
            'the start', flush=True)
      pending = None
  writer = Writer(folder, config.to_json(indent=2), members,
                  report_page=_report_page(config, folder, members) if lead
                  else None)
  # A second SIGINT ends the process at once (``signals.StopRequest``):
  # the page's last word.
  last_words = getattr(should_stop, 'last_words', None)
  if last_words is None or writer.page is None:
    last_words = []
  def interrupted():
    writer.end('stopped', (
        'interrupted at once by a second SIGINT, with no checkpoint of this '
        'point; an earlier checkpoint.npz, if any, continues the run: ' + (
            workdir.again_command(argv, path, True) if argv else
            f'the same command and --resume --workdir {path}')))
  last_words.append(interrupted)
  try:
    if resume and lead:
      writer.keep_rows(set(kept), pending)
      writer.with_page(lambda p: _seed_page(p, folder, members, kept))
    if lead:
      _say_plan(members, groups, is_sweep, kept if resume else None,
                pending, why, devices, path)
    results = engine.run(
        groups, loader=loader, devices=devices if is_sweep else (
            devices or jax.devices())[:1],
        chunk_size=chunk_size, callbacks=writer, should_stop=should_stop,
        resume=pending, kept=kept)
    return _finish(config, folder, writer, results)
  except Stopped as e:
    writer.end('stopped', workdir.stopped_line(
        e, path, is_sweep, argv).removeprefix('stopped '))
    raise
  except Exception as e:  # (after 'diverged', the page keeps that)
    writer.end('failed', str(e) if isinstance(e, UserError) else
               f'{type(e).__name__}: {e}')
    raise
  finally:
    last_words.remove(interrupted)
    writer.close()


def _say_plan(members, groups, is_sweep, kept, pending, why, devices,
              path) -> None:
  """The run's first console line: a sweep's members and devices (and
  with ``kept``, when resumed, how many finished before) and how it is
  chunked; a single run's sizes and steps."""
  if is_sweep:
    print(f'{len(members)} members in {len(groups)} group(s) on '
          f'{len(devices or jax.devices())} device(s), '
          f'{jax.process_count()} process(es) -> {path}'
          + (f' ({len(kept)} finished before, kept)' if kept is not None
             else ''), flush=True)
    if why:
      print(why, flush=True)
    return
  program = members[0].program
  h, w = program.plan[-1][0][:2]
  steps = ' + '.join(f'{n} at {max(shape[:2])} px'
                     for shape, n in program.plan[:-1])
  print(f'{w}x{h} px, {steps + " + " if steps else ""}'
        f'{program.plan[-1][1]} steps of {program.optimizer} -> {path}'
        + (f' (resuming after step {pending.done})' if pending else ''),
        flush=True)


def _finish(config, folder: workdir.Workdir, writer: Writer,
            results: list[engine.Result]) -> list[engine.Result]:
  """After the members ran: a sweep's results.csv, sheets and index.html;
  a single run's error if it diverged; the checkpoint, now used,
  deleted; the page's last word."""
  is_sweep, lead, path = folder.sweep, folder.lead, folder.path
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


def _report_page(config, folder: workdir.Workdir, members
                 ) -> page.Page | None:
  """The report page of a run or a sweep in ``folder``; None (and a
  note) if it cannot be made: the run does not depend on it."""
  is_sweep = 'sweep' in config
  try:
    return page.Page(folder.path, members, config,
                     axes=sweep.axes(config) if is_sweep else None,
                     settings=sweep.settings(config) if is_sweep else None,
                     options=targets.image_options(config))
  except Exception as e:  # pylint: disable=broad-except
    print(f'note: no {page.NAME} for this run ({type(e).__name__}: {e})',
          flush=True)
    return None


def _seed_page(report_page: page.Page, folder: workdir.Workdir, members,
               kept: dict) -> None:
  """A resumed run's page starts with what the stopped run left: its
  metrics rows, saved steps and kept results."""
  for row in page.read_rows(folder.path / 'metrics.jsonl'):
    report_page.log(row)
  for m in members:
    first = folder.step_path(m, 0)
    at = first.name.rfind('00000')  # the step's digits, not the member's
    pattern = first.name[:at] + '[0-9]' * 5 + first.name[at + 5:]
    for step_path in sorted(first.parent.glob(pattern)):
      step_ = int(step_path.stem.rsplit('_', 1)[1])
      report_page.save(m.index, step_, str(step_path.relative_to(
          folder.path)))
    if m.index in kept:
      report_page.result(kept[m.index])
