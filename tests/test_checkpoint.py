"""Checkpoints: a stopped run, resumed, ends bit-identical to one never
stopped; bad checkpoints and configs are refused."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import helpers
from helpers import (random_vgg19, run_one, tiny_config, tiny_flags,
                     tiny_sweep_file)
from nst import checkpoint
from nst.errors import Stopped, UserError
from test_run import ROOT, nst_run

PARAMS = random_vgg19()


def _stopped_then_resumed(config, stop_after, path):
  """Runs until ``stop_after`` steps, checkpoints to ``path``, resumes."""
  def on_checkpoint(ckpt):
    checkpoint.save(path, ckpt, config.to_json())

  with pytest.raises(Stopped) as e:
    run_one(config, PARAMS, should_stop=helpers.stop_after(stop_after),
                    on_checkpoint=on_checkpoint)
  assert e.value.step == stop_after
  ckpt = checkpoint.load(path)
  assert ckpt.done == stop_after
  return run_one(config, PARAMS, resume=ckpt)


@pytest.mark.parametrize('scales,stop_after', [
    ((), 3),
    ((16,), 2),   # inside the first scale
    ((16,), 3),   # at its last step: the next scale starts from it
    ((16,), 5),   # inside the second
])
@pytest.mark.slow
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, scales,
                                                  stop_after):
  config = tiny_config(num_steps=4, log_every=1, scales=scales,
                       scale_steps=(3,) * len(scales), checkpoint_every=0)
  want_image, want = run_one(config, PARAMS)
  got_image, got = _stopped_then_resumed(config, stop_after,
                                         tmp_path / 'c.npz')
  np.testing.assert_array_equal(got_image, want_image)
  assert got['loss'] == want['loss'] and got['step'] == want['step']


@pytest.mark.slow
def test_lbfgs_state_round_trips(tmp_path):
  config = tiny_config(num_steps=4, optimizer='lbfgs', checkpoint_every=0)
  want_image, want = run_one(config, PARAMS)
  got_image, got = _stopped_then_resumed(config, 2, tmp_path / 'c.npz')
  np.testing.assert_array_equal(got_image, want_image)
  assert got['loss'] == want['loss']


@pytest.mark.slow
def test_checkpoints_every_n_steps_only_while_finite():
  seen = []
  config = tiny_config(num_steps=5, checkpoint_every=2)
  run_one(config, PARAMS, on_checkpoint=lambda c: seen.append(c.done))
  assert seen == [2, 4]
  # Unclipped steps of 1e30 overflow at once: no checkpoint is written.
  seen.clear()
  with pytest.raises(UserError, match='likely too high'):
    run_one(tiny_config(num_steps=4, checkpoint_every=1,
                                log_every=2, clip_pixels=False,
                                learning_rate=1e30), PARAMS,
                    on_checkpoint=lambda c: seen.append(c.done))
  assert seen == []


def test_checkpoint_that_does_not_fit_is_refused(tmp_path):
  config = tiny_config(num_steps=3)
  path = tmp_path / 'c.npz'
  with pytest.raises(Stopped):
    run_one(config, PARAMS, should_stop=helpers.stop_after(1),
            on_checkpoint=lambda c: checkpoint.save(path, c, '{}'))
  ckpt = checkpoint.load(path)
  assert 'opt/ScaleByAdamState/mu' in ckpt.state
  with pytest.raises(UserError, match=r"does not fit this run.*"
                     r"opt/ScaleByAdamState/mu: unexpected"):
    run_one(tiny_config(num_steps=3, optimizer='lbfgs'), PARAMS,
                    resume=ckpt)
  with pytest.raises(UserError, match=r'checkpoint holds images of '
                     r'\(32, 32, 3\) at step 1; this run has \(16, 16, 3\)'):
    run_one(tiny_config(num_steps=3, image_size=16), PARAMS,
                    resume=ckpt)


def test_unreadable_checkpoints_are_user_errors(tmp_path):
  with pytest.raises(UserError, match='no checkpoint at'):
    checkpoint.load(tmp_path / 'none.npz')
  (tmp_path / 'bad.npz').write_bytes(b'PK\x03\x04 not really')
  with pytest.raises(UserError, match='cannot read checkpoint'):
    checkpoint.load(tmp_path / 'bad.npz')
  # An object array would need unpickling: refused, not loaded.
  np.savez(tmp_path / 'obj.npz', done=np.int64(1), image=np.zeros((2, 2, 3)),
           config=np.array([{'a': 1}], dtype=object))
  with pytest.raises(UserError, match='cannot read checkpoint'):
    checkpoint.load(tmp_path / 'obj.npz')
  # A checkpoint of the earlier format (unbatched, state keyed by JAX's
  # key strings) is refused by name.
  np.savez(tmp_path / 'old.npz', done=np.int64(1), image=np.zeros((2, 2, 3)),
           config=np.array('{}'), **{"state['average']['count']": np.int32(1)})
  with pytest.raises(UserError, match='earlier version of nst.*again with '
                     '--overwrite in place of --resume'):
    checkpoint.load(tmp_path / 'old.npz')


def _saved(path, **changes):
  """A checkpoint file of one member after step 1 of 3 at 32 px (Adam's
  state left out), with ``changes`` to its arrays; returns ``path``."""
  arrays = {'format': np.int64(checkpoint.FORMAT), 'done': np.int64(1),
            'image': np.zeros((1, 32, 32, 3), np.float32),
            'config': np.array(tiny_config(num_steps=3).to_json()),
            'extra/members': np.array([0]), 'extra/finite': np.array([True])}
  np.savez(path, **{**arrays, **changes})
  return path


def test_malformed_checkpoints_are_one_error(tmp_path):
  (tmp_path / 'empty.npz').write_bytes(b'')
  cases = [(tmp_path / 'empty.npz', 'cannot read checkpoint {}: it is empty')]
  for name, changes, problem in (
      ('negative', {'done': np.int64(-1)}, 'done is -1'),
      ('text', {'done': np.array('5')}, "done is a <U1 array, not an "
       'integer'),
      ('float', {'done': np.float64(2.0)}, 'done is a float64 array, not an '
       'integer'),
      ('several', {'done': np.array([1, 2])}, 'done is a int64 array of '
       r'shape \(2,\), not an integer'),
      ('list', {'config': np.array('[1, 2]')}, 'config is not a JSON object'),
      ('json', {'config': np.array('{"a": ')}, 'config is not a JSON object'),
      ('number', {'config': np.int64(1)}, 'config is not a JSON object'),
      ('image', {'image': np.zeros((32, 32, 3), np.float32)},
       r'image is a float32 array of shape \(32, 32, 3\), not float32 of '
       r'shape \(members, height, width, 3\)')):
    cases.append((_saved(tmp_path / f'{name}.npz', **changes),
                   'checkpoint {} is malformed: ' + problem))
  for path, message in cases:
    with pytest.raises(UserError, match='^' + message.format(
        repr(str(path))) + '; start the run again with --overwrite in place '
        'of --resume'):
      checkpoint.load(path)
  assert checkpoint.load(_saved(tmp_path / 'ok.npz')).done == 1


def test_a_checkpoint_outside_the_run_is_refused(tmp_path):
  config = tiny_config(num_steps=3)
  for done in (0, 3, 99):
    ckpt = checkpoint.load(_saved(tmp_path / f'{done}.npz',
                                  done=np.int64(done)))
    with pytest.raises(UserError, match=f'^the checkpoint is of step {done}; '
                       'this run has 3 steps, so it can continue after step '
                       '1 to 2 only; start the run again with --overwrite'):
      run_one(config, PARAMS, resume=ckpt)


def test_a_checkpoint_without_its_finite_flags_is_refused(tmp_path):
  for name, finite in (('none', None), ('short', np.array([True, True]))):
    path = _saved(tmp_path / f'{name}.npz', **({} if finite is None else {
        'extra/finite': finite}))
    if finite is None:  # written without it
      arrays = dict(np.load(path))
      del arrays['extra/finite']
      np.savez(path, **arrays)
    with pytest.raises(UserError, match='^the checkpoint is malformed: it '
                       'does not say which of its 1 slots are finite'):
      run_one(tiny_config(num_steps=3), PARAMS,
              resume=checkpoint.load(path))


def test_a_named_pipe_as_checkpoint_is_refused_not_opened(tmp_path):
  from helpers import without_blocking
  pipe = tmp_path / checkpoint.NAME
  os.mkfifo(pipe)
  with pytest.raises(UserError, match=f"^checkpoint '{pipe}' is not a "
                     'regular file$'):
    without_blocking(lambda: checkpoint.load(pipe), pipe)


ARGS = tiny_flags(content_image='skimage:astronaut', num_steps=12,
                  log_every=1, save_every=0, checkpoint_every=0,
                  optimizer='adam')


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(
    tmp_path):
  stopped, whole = tmp_path / 'stopped', tmp_path / 'whole'
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'default.py'), *ARGS, f'--workdir={stopped}'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  for line in proc.stdout:  # mid-way: after step 3 of 12 is logged
    if line.startswith('step     3/12'):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert 'Traceback' not in err and '--resume' in err
  done = int(np.load(stopped / 'checkpoint.npz')['done'])
  assert 3 <= done < 12
  assert (stopped / f'step_{done:05d}.png').is_file()
  assert not (stopped / 'final.png').exists()

  # A different config is refused, and nothing in the workdir changes.
  before = {p.name: p.read_bytes() for p in stopped.iterdir()}
  bad = nst_run(*ARGS, '--config.style_weight=3', '--resume',
                f'--workdir={stopped}')
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr
  assert 'style_weight (2.5 there, 3.0 now)' in bad.stderr
  assert {p.name: p.read_bytes() for p in stopped.iterdir()} == before

  resumed = nst_run(*ARGS, '--resume', f'--workdir={stopped}')
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming after step {done}' in resumed.stdout
  assert nst_run(*ARGS, f'--workdir={whole}').returncode == 0
  assert (stopped / 'final.png').read_bytes() == (whole / 'final.png').read_bytes()
  rows = lambda d: [{k: v for k, v in json.loads(l).items()
                     if k not in ('steps_per_s', 'time_s', 'left_s')}
                    for l in (d / 'metrics.jsonl').read_text().splitlines()]
  assert rows(stopped) == rows(whole)
  assert [r['step'] for r in rows(whole)] == list(range(13))


@pytest.mark.slow
def test_resume_needs_a_checkpoint(tmp_path):
  result = nst_run(*ARGS, '--resume', f'--workdir={tmp_path}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'nothing to resume in' in result.stderr
  assert 'no run was started there' in result.stderr
  (tmp_path / 'config.json').write_text(json.dumps(
      json.loads(nst_run(*ARGS, '--config.num_steps=0',
                         f'--workdir={tmp_path / "done"}').returncode == 0
                 and (tmp_path / 'done' / 'config.json').read_text())))
  result = nst_run(*ARGS, '--config.num_steps=0', '--resume',
                   f'--workdir={tmp_path / "done"}')
  assert result.returncode == 2 and 'has finished (final.png): nothing to ' \
      'resume' in result.stderr
  # Only a started run's config: it kept nothing, so it starts again.
  result = nst_run(*ARGS, '--config.num_steps=0', '--resume',
                   f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'ended before it kept anything to continue from; it starts again ' \
      'there' in result.stdout
  assert (tmp_path / 'final.png').is_file()
  result = nst_run(*ARGS, '--resume')
  assert result.returncode == 2 and '--resume needs --workdir' in result.stderr


@pytest.mark.slow
def test_stopped_sweep_resumes_only_its_unfinished_members(tmp_path,
                                                           monkeypatch):
  import csv
  from helpers import tiny_sweep
  from nst import runner
  c = tiny_sweep(num_steps=2)
  c.sweep.chunk_size = 1  # four chunks of one member, two steps each
  whole, stopped = tmp_path / 'whole', tmp_path / 'stopped'
  runner.run(c, whole)
  # Asked after each chunk's step 1 (not after its last step): the third
  # time is in the third chunk, member 2.
  with pytest.raises(Stopped) as e:
    runner.run(c, stopped, should_stop=helpers.stop_after(3))
  assert e.value.step == 1
  assert sorted(p.name for p in (stopped / 'members').glob('*.result.json')
                ) == ['0000.result.json', '0001.result.json']
  ckpt = checkpoint.load(stopped / 'checkpoint.npz')
  assert ckpt.done == 1 and ckpt.extra['members'].tolist() == [2]
  assert ckpt.image.shape == (1, 32, 32, 3)

  ran, result = [], runner.Writer.result
  monkeypatch.setattr(runner.Writer, 'result', lambda self, r: (
      ran.append(r.member.index), result(self, r))[1])
  results = runner.run(c, stopped, resume=True)
  assert ran == [2, 3]  # members 0 and 1 are not run again
  assert [r.member.index for r in sorted(results, key=lambda r:
                                         r.member.index)] == [0, 1, 2, 3]
  for i in range(4):
    name = f'members/{i:04d}.png'
    assert (stopped / name).read_bytes() == (whole / name).read_bytes()
  same = lambda d: [{k: v for k, v in row.items() if k not in (
      'wall_s', 'steps_per_s', 'group', 'chunk')}
      for row in csv.DictReader(open(d / 'results.csv'))]
  assert same(stopped) == same(whole)
  rows = lambda d: sorted((r['member'], r['step'], r['loss']) for r in map(
      json.loads, (d / 'metrics.jsonl').read_text().splitlines()))
  # Member 2's step-0 row is from before the stop, once: it continued.
  assert rows(stopped) == rows(whole)
  assert not (stopped / 'checkpoint.npz').exists()


@pytest.mark.slow
def test_a_sweep_resumed_with_another_chunk_size_keeps_its_finished_members(
    tmp_path, monkeypatch, capsys):
  from helpers import tiny_sweep
  from nst import runner
  c = tiny_sweep(num_steps=2)
  c.sweep.chunk_size = 1
  out = tmp_path / 'out'
  with pytest.raises(Stopped):  # member 0 finishes, 1 is checkpointed
    runner.run(c, out, should_stop=helpers.stop_after(2))
  before = {p.name: p.read_bytes() for p in (out / 'members').iterdir()
            if p.name.startswith('0000')}
  assert {'0000.png', '0000.result.json'} <= set(before)
  capsys.readouterr()

  c.sweep.chunk_size = 2  # resumed in chunks of two: [0, 1] is not whole
  ran, result = [], runner.Writer.result
  monkeypatch.setattr(runner.Writer, 'result', lambda self, r: (
      ran.append(r.member.index), result(self, r))[1])
  results = runner.run(c, out, resume=True)
  printed = capsys.readouterr().out
  assert ran == [1, 2, 3]  # as [1, 2] and [3]; 0 is not run again
  assert '(1 finished before, kept)' in printed
  # The checkpoint's chunk of one slot is not a chunk of this run.
  assert 'holds a chunk this run does not make' in printed
  assert [r.member.index for r in results] == [0, 1, 2, 3]
  assert [r.chunk for r in results] == [0, 1, 1, 2]  # numbered on
  assert {p.name: p.read_bytes() for p in (out / 'members').iterdir()
          if p.name.startswith('0000')} == before
  assert len((out / 'results.csv').read_text().splitlines()) == 1 + 4
  assert not (out / 'checkpoint.npz').exists()


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_resume_finishes_it(tmp_path):
  from helpers import tiny_sweep
  from nst import runner
  config_file = tiny_sweep_file(tmp_path / 'tiny_sweep.py',
                                'c = tiny_sweep(num_steps=3, log_every=1)',
                                'c.sweep.chunk_size = 1')
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'nst.run', '--config', str(config_file),
         f'--workdir={out}']
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stdout:  # the second of four chunks has begun
    if 'chunk 2/4' in line:
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert 'Traceback' not in err
  assert 'finished members and a checkpoint of the chunk' in err
  assert (out / 'checkpoint.npz').is_file()
  kept = sorted(p.name for p in (out / 'members').glob('*.result.json'))
  assert 1 <= len(kept) < 4 and not (out / 'results.csv').exists()

  resumed = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert f'({len(kept)} finished before, kept)' in resumed.stdout
  c = tiny_sweep(num_steps=3, log_every=1)
  c.sweep.chunk_size = 1
  runner.run(c, tmp_path / 'whole')
  for i in range(4):
    name = f'members/{i:04d}.png'
    assert (out / name).read_bytes() == (tmp_path / 'whole' / name).read_bytes()
  assert not (out / 'checkpoint.npz').exists()


def test_keep_rows_drops_later_and_half_written_rows(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 0, "loss": 1.0}\n{"step": 5, "loss": 0.5}\n'
                  '{"step": 10, "loss": 0.25}\n{"step": 15, "lo')
  checkpoint.keep_rows(path, lambda r: r['step'] <= 5)
  assert path.read_text() == ('{"step": 0, "loss": 1.0}\n'
                              '{"step": 5, "loss": 0.5}\n')


@pytest.mark.slow
def test_a_second_sigint_exits_at_once_and_cleanly(tmp_path):
  import time
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  args = [a for a in ARGS if 'num_steps' not in a and 'log_every' not in a]
  proc = subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'default.py'), *args,
       '--config.num_steps=400', '--config.log_every=50',
       f'--workdir={tmp_path / "o"}'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  for line in proc.stdout:
    if line.startswith('step     0/400'):
      proc.send_signal(signal.SIGINT)
      time.sleep(0.05)
      if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
      break
  _, err = proc.communicate(timeout=300)
  # Either the first SIGINT's checkpoint came first or the second cut in;
  # both exit 130 with one line, never a crash or a traceback.
  assert proc.returncode == 130, err
  assert 'Traceback' not in err and 'Fatal Python error' not in err
  assert 'interrupted' in err or 'stopped after step' in err
  # Either way the page no longer says it runs.
  shown = (tmp_path / 'o' / 'report.html').read_text()
  assert '<p class="state stopped"><b>Stopped</b>' in shown
  if 'stopped after step' not in err:
    assert 'interrupted at once by a second SIGINT' in shown
