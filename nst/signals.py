"""What stops a run: SIGINT and SIGTERM, turned into the engine's
``should_stop`` (it then checkpoints after the step under way)."""
from __future__ import annotations

import os
import signal
import sys


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
