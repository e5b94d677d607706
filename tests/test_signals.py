"""Stopping a run: how soon a stop lands, and what the command line says
it kept."""
import functools
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import tiny_config
from nst import checkpoint, engine, runner, signals, workdir
from nst.errors import Stopped


def test_a_stop_is_asked_with_at_most_one_step_queued(monkeypatch):
  # Dispatch runs ahead of the device; unbounded, a stop asked after step
  # i lands only once every step dispatched before it has run (up to the
  # next log step). Each time should_stop is asked after step i, step
  # i - 1 must have run: then a stop waits for at most the step in
  # progress.
  real, outputs = engine.compiled, []

  def compiled(*args):
    fns = real(*args)

    def counted(*a):
      out = fns.step(*a)
      outputs.append(out[2])
      return out
    return fns._replace(step=counted)

  monkeypatch.setattr(engine, 'compiled', compiled)
  ready = []

  def should_stop():
    if len(outputs) >= 2:
      ready.append(all(x.is_ready() for x in jax.tree.leaves(outputs[-2])))
    return len(outputs) == 30

  config = tiny_config(image_size=64, num_steps=40, log_every=0)
  with pytest.raises(Stopped) as stop:
    engine.stylize(config, should_stop=should_stop)
  assert stop.value.step == 30 and stop.value.checkpointed
  assert len(ready) == 29 and all(ready), ready


def test_the_stop_line_says_what_was_kept_and_the_command_to_continue(
    monkeypatch):
  monkeypatch.setattr(workdir, 'again_command', functools.partial(
      workdir.again_command, python='python'))
  path = Path('/tmp/run')
  argv = ['/x/nst/run.py', '--config', 'configs/default.py',
          '--config.style_image=my painting.jpg', '--workdir', 'old',
          '--overwrite']
  line = workdir.stopped_line(Stopped(7), path, False, argv)
  assert line == ('stopped after step 7; checkpoint and step_00007.png are '
                  'in /tmp/run; continue with: python -m nst.run --config '
                  "configs/default.py '--config.style_image=my painting.jpg' "
                  '--resume --workdir /tmp/run')
  line = workdir.stopped_line(Stopped(7, checkpointed=False), path, False,
                              argv)
  assert line == ('stopped after step 7; step_00007.png is in /tmp/run, but '
                  'no checkpoint (the image was not finite); start it again '
                  'in /tmp/run with: python -m nst.run --config '
                  "configs/default.py '--config.style_image=my painting.jpg' "
                  '--workdir /tmp/run')
  line = workdir.stopped_line(Stopped(0, False, saved=False), path, False,
                              ['run.py', '--workdir=/tmp/run', '--resume'])
  assert line == ('stopped after step 0; nothing was kept; start it again '
                  'in /tmp/run with: python -m nst.run --workdir /tmp/run')
  # '-workdir x', '--workdir -x' and a trailing '--' are left out too.
  for argv in (['run.py', '--noresume', '-workdir', 'x'],
               ['run.py', '--workdir', '-x', '--'],
               ['run.py', '--nooverwrite', '--', '--resume']):
    line = workdir.stopped_line(Stopped(7, checkpointed=False), path, True,
                                argv)
    assert 'checkpoint of the chunk' not in line and 'finished members' in line
    assert line.endswith('continue with: python -m nst.run --resume '
                         '--workdir /tmp/run'), argv
  # Without a command line (the library's runner.run): in words.
  assert workdir.stopped_line(Stopped(7), path, False).endswith(
      'continue with: the same command and --resume --workdir /tmp/run')


def test_the_command_names_this_interpreter(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr('sys.executable', str(tmp_path / '.venv/bin/python'))
  assert workdir.again_command(['run.py'], Path('w'), True) == (
      '.venv/bin/python -m nst.run --resume --workdir w')
  monkeypatch.setattr('sys.executable', '/usr/bin/python3')
  assert workdir.again_command(['run.py'], Path('w'), False) == (
      '/usr/bin/python3 -m nst.run --workdir w')


def test_the_handler_writes_unbuffered_and_a_second_sigint_exits(capfd):
  # The handler never raises into the code it interrupts: its line is one
  # os.write (a print could meet sys.stderr mid-write), the second SIGINT
  # ends the process (checked in a subprocess in test_checkpoint).
  stop = signals.StopRequest()
  stop.handle(15, None)
  stop.handle(15, None)  # a second SIGTERM changes nothing
  assert stop() and stop.signal == 15
  assert capfd.readouterr().err.count('SIGTERM: stopping') == 1


def test_a_second_sigint_says_the_last_words_then_exits(monkeypatch):
  said = []
  monkeypatch.setattr(signals.os, '_exit', lambda code: said.append(code))
  monkeypatch.setattr(signals, 'say', lambda text: said.append(text))
  stop = signals.StopRequest()
  stop.last_words += [lambda: said.append('page'), lambda: 1 / 0,
                      lambda: said.append('after a failing word')]
  stop.handle(2, None)
  assert said == ['SIGINT: stopping after the step in progress and the one '
                  'queued behind it (SIGINT again to interrupt at once)']
  stop.handle(2, None)
  assert said[1:] == ['page', 'after a failing word', 'interrupted', 130]


def test_a_run_gives_its_page_a_last_word_while_it_runs(tmp_path):
  # What a second SIGINT would call in the middle of the run: the page
  # says the run was interrupted and how to continue; after the run the
  # word is gone.
  class Stop:
    def __init__(self):
      self.last_words, self.calls, self.shown = [], 0, ''

    def __call__(self):
      self.calls += 1
      if self.calls == 2:
        for word in self.last_words:
          word()
        self.shown = (tmp_path / 'o' / 'report.html').read_text()
      return False

  stop = Stop()
  runner.run(tiny_config(num_steps=3), tmp_path / 'o', should_stop=stop,
             argv=['nst.run', '--config', 'c.py'])
  assert '<p class="state stopped"><b>Stopped</b>' in stop.shown
  assert ('interrupted at once by a second SIGINT, with no checkpoint of '
          'this point; an earlier checkpoint.npz, if any, continues the '
          'run: ') in stop.shown
  again = f"-m nst.run --config c.py --resume --workdir {tmp_path / 'o'}"
  assert again in stop.shown
  assert stop.last_words == []


def _slow_first_calls(monkeypatch, at_sizes):
  """Makes the step's first call at each image size in ``at_sizes`` take
  0.5 s more, as a long compilation would; returns a list that holds
  True while such a call runs."""
  real, compiling = engine.compiled, [False]

  def compiled(*args):
    fns = real(*args)
    seen = set()

    def slow(*a):
      size = max(a[3].shape[1:3])
      if size in at_sizes and size not in seen:
        seen.add(size)
        compiling[0] = True
        time.sleep(0.5)
        compiling[0] = False
      return fns.step(*a)
    return fns._replace(step=slow)

  monkeypatch.setattr(engine, 'compiled', compiled)
  return compiling


def test_a_stop_while_the_first_step_compiles_ends_at_once(monkeypatch,
                                                            tmp_path):
  compiling = _slow_first_calls(monkeypatch, {32})
  config = tiny_config(num_steps=3, save_every=1)
  with pytest.raises(Stopped) as stop:
    runner.run(config, tmp_path, should_stop=lambda: compiling[0])
  assert (stop.value.step, stop.value.checkpointed, stop.value.saved) == (
      0, False, False)
  assert not list(tmp_path.glob('*.png')) and not list(
      tmp_path.glob('checkpoint.npz'))
  # Nothing to continue from: the same command starts it again.
  [result] = runner.run(config, tmp_path)
  assert result.metrics['step'] == 3


def test_a_stop_while_a_finer_scale_compiles_keeps_the_coarser_scale(
    monkeypatch, tmp_path):
  config = tiny_config(image_size=64, scales=(0.5,), scale_steps=(2,),
                       num_steps=2, optimizer='lbfgs')
  unstopped = runner.run(config, tmp_path / 'a')[0]
  compiling = _slow_first_calls(monkeypatch, {64})
  out = tmp_path / 'b'
  with pytest.raises(Stopped) as stop:
    runner.run(config, out, should_stop=lambda: compiling[0],
               argv=['run.py', '--config', 'c.py'])
  # The coarse scale's last step is kept: checkpoint and image.
  assert (stop.value.step, stop.value.checkpointed) == (2, True)
  # The page says so, and the command that continues.
  assert (f'-m nst.run --config c.py --resume --workdir {out}' in
          (out / 'report.html').read_text())
  assert checkpoint.load(out / 'checkpoint.npz').done == 2
  assert np.asarray(Image.open(out / 'step_00002.png')).shape == (32, 32, 3)
  resumed = runner.run(config, out, resume=True)[0]
  assert resumed.metrics == unstopped.metrics
  assert (out / 'final.png').read_bytes() == (
      tmp_path / 'a' / 'final.png').read_bytes()


def test_a_resumed_run_stopped_while_compiling_keeps_its_checkpoint(
    monkeypatch, tmp_path):
  config = tiny_config(num_steps=4, checkpoint_every=2)
  with pytest.raises(MemoryError):  # a crash after step 2's checkpoint
    runner.run(config, tmp_path, should_stop=helpers.stop_after(
        3, MemoryError('injected')))
  compiling = _slow_first_calls(monkeypatch, {32})
  with pytest.raises(Stopped) as stop:
    runner.run(config, tmp_path, resume=True,
                should_stop=lambda: compiling[0])
  assert (stop.value.step, stop.value.checkpointed, stop.value.saved) == (
      2, True, False)
  assert workdir.stopped_line(stop.value, tmp_path, False).startswith(
      f'stopped after step 2; checkpoint is in {tmp_path}; continue')
  assert checkpoint.load(tmp_path / 'checkpoint.npz').done == 2


def _nst_run_popen(tmp_path, *args, env=None):
  import os
  import subprocess
  import sys
  root = Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS='cpu',
             **(env or {}))
  return subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config',
       str(root / 'configs' / 'default.py'), *args],
      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


@pytest.mark.slow
def test_sighup_stops_with_a_checkpoint_as_sigterm_does(tmp_path):
  # The terminal closed or an ssh session dropped: the run is kept.
  import signal
  proc = _nst_run_popen(tmp_path, *helpers.tiny_flags(
      num_steps=12, log_every=1, save_every=0, checkpoint_every=0,
      optimizer='adam'), f'--workdir={tmp_path / "run"}')
  for line in proc.stdout:
    if line.startswith('step     3/12'):
      proc.send_signal(signal.SIGHUP)
      break
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGHUP, err
  assert 'SIGHUP: stopping' in err and 'Traceback' not in err
  assert 3 <= int(np.load(tmp_path / 'run' / 'checkpoint.npz')['done']) < 12


@pytest.mark.slow
def test_a_ctrl_c_during_the_weights_download_is_one_line_and_130(tmp_path):
  # The registry accepts the connection and never answers: pip waits, and
  # the Ctrl-C lands in the download.
  import signal
  import socket
  server = socket.socket()
  server.bind(('127.0.0.1', 0))
  server.listen(4)
  url = f'http://127.0.0.1:{server.getsockname()[1]}/simple'
  proc = _nst_run_popen(
      tmp_path, *helpers.tiny_flags(), '--config.weights=',
      f'--workdir={tmp_path / "run"}',
      env={'NST_CACHE': str(tmp_path / 'cache'), 'PIP_INDEX_URL': url,
           'PIP_TIMEOUT': '60'})
  try:
    for line in proc.stderr:
      if line.startswith('fetching VGG-19 weights'):
        time.sleep(1.0)  # pip is waiting on the socket
        proc.send_signal(signal.SIGINT)
        break
    _, err = proc.communicate(timeout=60)
  finally:
    server.close()
  assert proc.returncode == 130, err
  assert err.strip() == 'interrupted', err
  assert not (tmp_path / 'run').exists()  # checked before anything is written
