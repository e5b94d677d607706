"""Stopping a run: how soon a stop lands, and what the command line says
it kept."""
from pathlib import Path

import jax
import pytest

from helpers import tiny_config
from nst import engine, run, signals
from nst.errors import Stopped


def test_a_stop_is_asked_with_at_most_one_step_queued(monkeypatch):
  # Dispatch runs ahead of the device; unbounded, a stop asked after step
  # i lands only once every step dispatched before it has run (up to the
  # next log step). Each time should_stop is asked after step i, step
  # i - 1 must have run: then a stop waits for at most the step in
  # progress.
  real, outputs = engine.compiled, []

  def compiled(*args):
    step_fn, *rest = real(*args)

    def counted(*a):
      out = step_fn(*a)
      outputs.append(out[2])
      return out
    return (counted, *rest)

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


def test_the_stop_line_says_what_was_kept():
  path = Path('/tmp/run')
  line = run.stopped_line(Stopped(7), path, is_sweep=False)
  assert line == ('stopped after step 7; checkpoint and step_00007.png are '
                  'in /tmp/run; continue with the same command and --resume '
                  '--workdir /tmp/run')
  line = run.stopped_line(Stopped(7, checkpointed=False), path, False)
  assert 'no checkpoint was written' in line and '--resume --workdir' not in line
  line = run.stopped_line(Stopped(7, checkpointed=False), path, True)
  assert 'checkpoint of the chunk' not in line and 'finished members' in line


def test_the_handler_writes_unbuffered_and_a_second_sigint_exits(capfd):
  # The handler never raises into the code it interrupts: its line is one
  # os.write (a print could meet sys.stderr mid-write), the second SIGINT
  # ends the process (checked in a subprocess in test_checkpoint).
  stop = signals.StopRequest()
  stop.handle(15, None)
  stop.handle(15, None)  # a second SIGTERM changes nothing
  assert stop() and stop.signal == 15
  assert capfd.readouterr().err.count('SIGTERM: stopping') == 1
