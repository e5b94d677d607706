"""The workdir's guarantees: --overwrite leaves nothing of the earlier run,
one process per workdir, --resume never relabels, files get the umask."""
import contextlib
import csv
import fcntl
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import stop_after, tiny_config, tiny_sweep
from nst import checkpoint, images, memory, runner, workdir
from nst.errors import DiskFull, Stopped, UserError
from test_run import ROOT, TINY




def test_overwrite_leaves_nothing_of_the_earlier_run(tmp_path):
  out = tmp_path / 'o'
  runner.run(tiny_config(num_steps=3, save_every=1), out)
  (out / 'notes.txt').write_text('mine')  # not an output: kept
  runner.run(tiny_config(num_steps=1, save_every=1), out, overwrite=True)
  assert sorted(p.name for p in out.iterdir()) == [
      '.lock', 'config.json', 'final.png', 'metrics.jsonl', 'notes.txt',
      'report.html', 'step_00001.png']
  rows = (out / 'metrics.jsonl').read_text().splitlines()
  assert len(rows) == 2  # steps 0 and 1 of the new run only
  assert (out / 'notes.txt').read_text() == 'mine'


def test_a_second_process_on_the_workdir_is_refused(tmp_path):
  out = tmp_path / 'o'
  out.mkdir()
  # Another open file description holds the lock, as a running nst.run
  # would (flock locks conflict between descriptions, also in one process).
  with open(out / workdir.LOCK, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.write('12345\n')
    lock.flush()
    with pytest.raises(UserError, match='in use by process 12345'):
      runner.run(tiny_config(), out)
  assert [p.name for p in out.iterdir()] == [workdir.LOCK]
  # Released, the workdir can be used.
  runner.run(tiny_config(), out)
  assert (out / 'final.png').is_file()


@pytest.mark.slow
def test_files_get_the_users_umask(tmp_path):
  out = tmp_path / 'o'
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  # The umask is set by a shell, not in a forked copy of this (threaded)
  # process; the arguments pass through "$@" unquoted.
  result = subprocess.run(
      ['sh', '-c', 'umask 027 && exec "$@"', 'sh', sys.executable, '-m',
       'nst.run', '--config', str(ROOT / 'configs' / 'default.py'), *TINY,
       f'--workdir={out}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  for name in ('config.json', 'final.png', 'step_00001.png'):
    assert (out / name).stat().st_mode & 0o777 == 0o640, name


def _rows(path):
  drop = ('wall_s', 'steps_per_s', 'group', 'chunk')
  return [{k: v for k, v in r.items() if k not in drop}
          for r in csv.DictReader(open(path / 'results.csv'))]


@pytest.mark.slow
def test_resume_after_overwriting_another_sweep_keeps_none_of_it(tmp_path):
  a = tiny_sweep(num_steps=2)
  a.sweep.chunk_size = 1
  b = tiny_sweep(num_steps=2, init='content')  # every member differs
  b.sweep.chunk_size = 1
  out, whole = tmp_path / 'o', tmp_path / 'whole'
  runner.run(b, whole)
  runner.run(a, out)
  # Stopped after member 1's first step: members 2 and 3 still have
  # sweep a's files unless --overwrite removed them.
  with pytest.raises(Stopped):
    runner.run(b, out, overwrite=True, should_stop=stop_after(2))
  assert not (out / 'members' / '0002.png').exists()
  results = runner.run(b, out, resume=True)
  assert _rows(out) == _rows(whole)
  for r in results:
    name = f'members/{r.member.index:04d}.png'
    assert (out / name).read_bytes() == (whole / name).read_bytes()


@pytest.mark.slow
def test_an_image_added_to_a_swept_folder_is_never_relabelled(tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  for seed, name in enumerate(('b.png', 'c.png')):
    _photo(tmp_path, name, seed).rename(photos / name)
  c = tiny_sweep(num_steps=2)
  del c.sweep.axes['style_layers']
  c.sweep.rows = 'content_image'
  c.sweep.axes.content_image = str(photos)
  c.sweep.chunk_size = 1
  out = tmp_path / 'o'
  with pytest.raises(Stopped):  # after b's two ratios, inside c's first
    runner.run(c, out, should_stop=stop_after(3))
  assert sorted(p.name for p in (out / 'members').glob('*.result.json')) == [
      '0000.result.json', '0001.result.json']
  _photo(tmp_path, 'a.png', seed=3).rename(photos / 'a.png')  # sorts first
  results = runner.run(c, out, resume=True)
  runner.run(c, tmp_path / 'whole')
  assert _rows(out) == _rows(tmp_path / 'whole')
  assert [r.member.values['content_image'][-5:] for r in sorted(
      results, key=lambda r: r.member.index)] == ['a.png'] * 2 + [
          'b.png'] * 2 + ['c.png'] * 2
  for r in results:
    name = f'members/{r.member.index:04d}.png'
    assert (out / name).read_bytes() == (
        tmp_path / 'whole' / name).read_bytes(), name


def _photo(folder, name, seed=0):
  rng = np.random.default_rng(seed)
  path = folder / f'src_{name}'
  Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(path)
  return path


def test_a_single_run_refuses_to_resume_from_changed_inputs(tmp_path):
  photo = _photo(tmp_path, 'p.png')
  config = tiny_config(content_image=str(photo), num_steps=3)
  out = tmp_path / 'o'
  with pytest.raises(Stopped):
    runner.run(config, out, should_stop=stop_after(1))
  _photo(tmp_path, 'p.png', seed=1)  # the same path, other pixels
  with pytest.raises(UserError, match='input images .* changed since it '
                     'was stopped'):
    runner.run(config, out, resume=True)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
  images.write_atomic(tmp_path / 'a.json', b'{}')
  assert [p.name for p in tmp_path.iterdir()] == ['a.json']


def test_resume_and_overwrite_together_are_refused(tmp_path):
  with pytest.raises(UserError, match='--resume .* --overwrite'):
    runner.run(tiny_config(), tmp_path, overwrite=True, resume=True)


def test_overwrite_deletes_only_where_a_run_was_started(tmp_path):
  (tmp_path / 'index.html').write_text('my site')
  with pytest.raises(UserError, match='no config.json of a run'):
    runner.run(tiny_config(), tmp_path, overwrite=True)
  assert [p.name for p in tmp_path.iterdir()] == ['index.html']


def test_a_resumed_sweep_keeps_its_step_images_and_chunks(tmp_path):
  c = tiny_sweep(num_steps=3, save_every=1)
  c.sweep.chunk_size = 2  # two chunks of two members
  whole, out = tmp_path / 'whole', tmp_path / 'o'
  runner.run(c, whole)
  with pytest.raises(Stopped) as e:  # the second chunk, after step 2
    runner.run(c, out, should_stop=stop_after(4))
  assert e.value.step == 2
  runner.run(c, out, resume=True)
  names = sorted(p.name for p in (whole / 'members').iterdir())
  assert sorted(p.name for p in (out / 'members').iterdir()) == names
  assert '0002.step_00001.png' in names
  for name in names:
    if name.endswith('.png'):
      assert (out / 'members' / name).read_bytes() == (
          whole / 'members' / name).read_bytes(), name
  assert _rows(out) == _rows(whole)


def _crash_after(n):
  """Raises after step n, as a crash (out of memory, a bug) would."""
  return stop_after(n, MemoryError('out of memory (injected)'))


def test_a_run_that_crashed_before_a_checkpoint_reruns_with_the_same_command(
    tmp_path):
  out = tmp_path / 'o'
  config = tiny_config(num_steps=3, save_every=1)
  with pytest.raises(MemoryError):
    runner.run(config, out, should_stop=_crash_after(2))
  assert {p.name for p in out.iterdir()} == {
      '.lock', 'config.json', 'metrics.jsonl', 'report.html',
      'step_00001.png', 'step_00002.png'}  # no checkpoint: nothing to
                                           # continue from
  text = (out / 'report.html').read_text()
  assert '<b>Failed</b>' in text and 'MemoryError: out of memory' in text
  # The same command starts it again there; so does --resume.
  for resume in (False, True):
    results = runner.run(config, out, resume=resume)
    rows = [json.loads(l) for l in open(out / 'metrics.jsonl')]
    assert [r['step'] for r in rows] == [0, 1, 2, 3]
    assert results[0].metrics['step'] == 3 and (out / 'final.png').is_file()
    (out / 'final.png').unlink()  # as if that rerun had crashed too
    with pytest.raises(MemoryError):
      runner.run(config, out, should_stop=_crash_after(1))
  # Another config, or a folder holding a result, is still refused.
  with pytest.raises(UserError, match='already holds files'):
    runner.run(tiny_config(num_steps=2), out)
  runner.run(config, out)
  with pytest.raises(UserError, match='already holds files'):
    runner.run(config, out)


def test_a_crashed_run_with_a_checkpoint_points_to_resume(tmp_path):
  out = tmp_path / 'o'
  config = tiny_config(num_steps=4, checkpoint_every=2)
  with pytest.raises(MemoryError):
    runner.run(config, out, should_stop=_crash_after(3))
  with pytest.raises(UserError, match='--resume to continue'):
    runner.run(config, out)
  results = runner.run(config, out, resume=True)
  assert results[0].metrics['step'] == 4


def test_named_pipes_in_a_workdir_are_refused_not_opened(tmp_path):
  from helpers import without_blocking
  out = tmp_path / 'o'
  out.mkdir()
  pipe = out / 'config.json'
  os.mkfifo(pipe)
  message = f"^workdir file '{pipe}' is not a regular file$"
  with pytest.raises(UserError, match=message):  # --overwrite reads it
    without_blocking(lambda: workdir.Workdir(out, sweep=False,
                                             overwrite=True), pipe)
  with pytest.raises(UserError, match=message):  # --resume too
    without_blocking(lambda: runner.run(tiny_config(), out, resume=True),
                     pipe)
  # A run's own folder, with the pipes where --resume reads.
  pipe.unlink()
  (out / 'config.json').write_text(tiny_config().to_json())
  for name in ('checkpoint.npz', 'metrics.jsonl'):
    os.mkfifo(out / name)
  with pytest.raises(UserError, match=f"^checkpoint '{out}/checkpoint.npz' "
                     'is not a regular file$'):
    without_blocking(lambda: runner.run(tiny_config(), out, resume=True),
                     out / 'checkpoint.npz')
  (out / 'checkpoint.npz').unlink()
  sweep = tiny_sweep()
  (out / 'config.json').write_text(sweep.to_json())
  with pytest.raises(UserError, match=f"^workdir file '{out}/metrics.jsonl' "
                     'is not a regular file$'):
    without_blocking(lambda: runner.run(sweep, out, resume=True),
                     out / 'metrics.jsonl')


def test_a_workdir_under_a_file_is_one_error(tmp_path):
  (tmp_path / 'file').write_text('mine')
  with pytest.raises(UserError, match=f"^cannot create '{tmp_path}/file/o': "
                     'Not a directory$'):
    runner.run(tiny_config(), tmp_path / 'file' / 'o')
  assert (tmp_path / 'file').read_text() == 'mine'


def _file_system(stack, tmp_path, fs):
  """A folder on a tmpfs (``fs='tmpfs'``) or in ``tmp_path``."""
  if fs == 'tmpfs':
    return stack.enter_context(helpers.tmpfs(tmp_path / 'fs'))
  return tmp_path


def _refuse(folder, problem, monkeypatch, fs):
  """From now on writes in ``folder`` fail: 'read-only' or 'full'."""
  if problem == 'read-only':
    if fs == 'tmpfs':
      helpers.remount_read_only(folder)
    else:
      helpers.inject_read_only(monkeypatch)
  elif fs == 'tmpfs':
    helpers.fill(folder)
  else:
    helpers.inject_full_disk(monkeypatch)


@pytest.mark.parametrize('fs', ['injected', 'tmpfs'])
@pytest.mark.parametrize('problem,cause', [
    ('read-only', 'Read-only file system'),
    ('full', 'No space left on device')])
def test_a_failed_write_is_one_error_and_keeps_the_old_file(
    tmp_path, monkeypatch, fs, problem, cause):
  with contextlib.ExitStack() as stack:
    folder = _file_system(stack, tmp_path, fs)
    images.write_atomic(folder / 'a.json', b'{"old": 1}')
    _refuse(folder, problem, monkeypatch, fs)
    with pytest.raises(UserError, match=f"^cannot write '{folder}/a.json': "
                       f'{cause}$') as e:
      images.write_atomic(folder / 'a.json', b'{"new": 2}' * 10000)
    assert isinstance(e.value, DiskFull) == (problem == 'full')
    assert (folder / 'a.json').read_bytes() == b'{"old": 1}'
    assert sorted(p.name for p in folder.iterdir()
                  if p.name != 'filler') == ['a.json']


@pytest.mark.parametrize('fs', ['injected', 'tmpfs'])
def test_a_full_disk_during_a_run_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, fs):
  with contextlib.ExitStack() as stack:
    folder = _file_system(stack, tmp_path, fs)
    out = folder / 'o'
    kept = {}

    def should_stop():  # asked while step 1 compiles, then after each step
      if not kept and (out / 'checkpoint.npz').exists():  # after step 1
        kept['checkpoint'] = (out / 'checkpoint.npz').read_bytes()
        _refuse(folder, 'full', monkeypatch, fs)
      return False

    with pytest.raises(DiskFull, match=f"^cannot write '{out}/checkpoint.npz'"
                       ': No space left on device$'):
      runner.run(tiny_config(num_steps=3, checkpoint_every=1), out,
                  should_stop=should_stop)
    assert (out / 'checkpoint.npz').read_bytes() == kept['checkpoint']
    assert not list(out.glob('.*.tmp'))
    rows = (out / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(r)['step'] for r in rows] == [0, 1, 2]


@pytest.mark.parametrize('fs', ['injected', 'tmpfs'])
def test_a_full_disk_while_logging_is_one_error(tmp_path, monkeypatch, fs):
  with contextlib.ExitStack() as stack:
    folder = _file_system(stack, tmp_path, fs)
    if fs == 'injected':
      _refuse(folder, 'full', monkeypatch, fs)
    writer = runner.Writer(workdir.Workdir(folder, sweep=False), '{}', [])
    if fs == 'tmpfs':
      _refuse(folder, 'full', monkeypatch, fs)
    with pytest.raises(DiskFull, match=f"^cannot write '{folder}/"
                       "metrics.jsonl': No space left on device$"):
      for step in range(1000):  # past the file's last page
        writer.log({'member': 0, 'step': step, 'loss': 1.0})
    writer.close()


def test_a_run_too_large_for_memory_is_refused_before_reading_or_writing(
    tmp_path, monkeypatch):
  # Before the memory check this run read its photo at 100000 px (80 GB as
  # float32) and went on until it ran out of memory: made to fail at once.
  def read_at_size(rgb, height, width):
    raise AssertionError(f'an image was read at {width}x{height} px')

  monkeypatch.setattr(images, 'resize_to', read_at_size)
  config = tiny_config(image_size=100000, optimizer='lbfgs',
                       lbfgs_memory=10000000, style_scale=400)
  with pytest.raises(UserError, match=r'^not enough memory: this run needs '
                     r'an estimated [\d.]+ EiB of RAM, where [\d.]+ GiB is '
                     r'available \(.*--nomemory_check') as e:
    runner.run(config, tmp_path / 'out')
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'out').exists()


def test_the_memory_check_can_be_skipped(tmp_path, monkeypatch):
  monkeypatch.setattr(memory, 'available', lambda: {'host': (1, 'a test')})
  with pytest.raises(UserError, match=r'where 1 B is available \(a test\)'):
    runner.run(tiny_config(), tmp_path / 'out')
  assert not (tmp_path / 'out').exists()
  runner.run(tiny_config(), tmp_path / 'out', memory_check=False)
  assert (tmp_path / 'out' / 'final.png').is_file()


def test_a_restart_is_decided_again_under_the_lock_and_keeps_user_files(
    tmp_path):
  out = tmp_path / 'o'
  config = tiny_config(num_steps=2, save_every=1)
  with pytest.raises(MemoryError):
    runner.run(config, out, should_stop=_crash_after(1))
  (out / 'figure1.png').write_bytes(b'mine')  # not what a run starts with
  # Another run of the same command finished meanwhile: refused.
  folder = workdir.Workdir(out, sweep=False, config=config)
  assert folder.restart
  (out / 'final.png').write_bytes(b'a result')
  with pytest.raises(UserError, match='changed while this run started'):
    folder.open(config.to_json(indent=2))
  folder.close()
  (out / 'final.png').unlink()
  runner.run(config, out)
  assert (out / 'figure1.png').read_bytes() == b'mine'
  assert (out / 'final.png').is_file()


def test_overwrite_refuses_to_delete_an_input(tmp_path):
  out = tmp_path / 'o'
  runner.run(tiny_config(num_steps=1), out)
  before = (out / 'final.png').read_bytes()
  with pytest.raises(UserError, match="^content_image '.*final.png' is an "
                     'output of the earlier run in .*, which --overwrite '
                     'would delete: copy it elsewhere first'):
    runner.run(tiny_config(num_steps=1, content_image=str(out /
                                                           'final.png')),
                out, overwrite=True)
  assert (out / 'final.png').read_bytes() == before


def test_a_directory_where_the_result_goes_is_refused_first(tmp_path):
  out = tmp_path / 'o'
  (out / 'final.png').mkdir(parents=True)
  with pytest.raises(UserError, match='final.png.* is a directory, where the '
                     'result is to be written'):
    runner.run(tiny_config(num_steps=1), out, overwrite=True)
  assert sorted(p.name for p in out.iterdir()) == ['final.png']


def test_a_stopped_sweep_resumes_with_smaller_chunks(tmp_path):
  c = tiny_sweep(num_steps=3)
  c.sweep.chunk_size = 2
  whole, out = tmp_path / 'whole', tmp_path / 'o'
  runner.run(c, whole)
  with pytest.raises(Stopped):  # in the second chunk
    runner.run(c, out, should_stop=stop_after(4))
  changed = tiny_sweep(num_steps=4)
  changed.sweep.chunk_size = 1
  with pytest.raises(UserError, match=r"these fields differ: num_steps \(3 "
                     r'there, 4 now\)$'):
    runner.run(changed, out, resume=True)
  # A run started before a field existed: its config.json lacks it.
  saved = json.loads((out / 'config.json').read_text())
  with pytest.raises(UserError, match=r"min_scale_size \(not in that run's "
                     r'config: a field added since it started; 0 now, '
                     r'--config.min_scale_size=\.\.\. for the behaviour'):
    checkpoint.check_same_config(
        {k: v for k, v in saved.items() if k != 'min_scale_size'}, c, out)
  c.sweep.chunk_size = 1  # after running out of memory, say
  runner.run(c, out, resume=True)
  assert _rows(out) == _rows(whole)
  for name in sorted(p.name for p in (whole / 'members').iterdir()):
    if name.endswith('.png'):
      assert (out / 'members' / name).read_bytes() == (
          whole / 'members' / name).read_bytes(), name


def test_a_page_that_cannot_be_written_is_said_once_and_the_run_goes_on(
    tmp_path, capsys):
  class FullPage:
    def write(self):
      raise DiskFull(f"cannot write '{tmp_path}/report.html': No space "
                     'left on device')
  writer = runner.Writer(workdir.Workdir(tmp_path, sweep=False), '{}', [],
                         quiet=True, report_page=FullPage())
  for step in range(3):
    writer.progress(f'step {step}')
  writer.close()
  assert capsys.readouterr().out.splitlines() == [
      f"note: report.html was not written (cannot write '{tmp_path}/"
      "report.html': No space left on device); it shows an earlier state "
      'until a later write succeeds; the run goes on']
