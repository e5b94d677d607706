"""What stops a run: SIGINT, SIGTERM and SIGHUP (the terminal closed),
turned into the engine's ``should_stop`` (it then checkpoints after the
step under way)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(text: str) -> None:
  """A line on stderr from a signal handler: an unbuffered write, since
  the handler may run while the interrupted code is inside a write to the
  buffered ``sys.stderr`` (a second write there raises)."""
  try:
    os.write(2, (text + '\n').encode())
  except OSError:
    pass


def interrupted(signum=None, frame=None) -> None:
  """Ends the process at once with status 130 and the one line
  'interrupted'. Exits rather than raising KeyboardInterrupt: a handler
  runs between any two bytecodes, also inside JAX's callbacks, where an
  exception is printed as a traceback and swallowed; and it skips tearing
  the interpreter down under computations still running on XLA's threads.
  Every file is written atomically, so nothing is left half-written."""
  say('interrupted')
  os._exit(130)


class StopRequest:
  """SIGINT, SIGTERM and SIGHUP ask the run to stop after the step in progress and
  the one queued behind it (the engine keeps at most one), or at once
  during a compilation; it then checkpoints. A second SIGINT interrupts
  at once.

  ``install()`` is for a process that ends with the run (the command
  line): the handlers stay until the process exits, so a second SIGINT
  while the run writes its checkpoint or shuts down still exits cleanly.
  As a context manager, the previous handlers come back on exit.

  ``last_words``: what a second SIGINT calls before the process ends, each
  once, its errors ignored (the run's report page says it was
  interrupted).
  """

  def __init__(self):
    self.signal = None
    self.previous = {}
    self.last_words = []

  def install(self) -> 'StopRequest':
    self.previous = {s: signal.signal(s, self.handle) for s in STOPS}
    return self

  def __enter__(self):
    return self.install()

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  def handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      for word in list(self.last_words):
        try:
          word()
        except BaseException:  # pylint: disable=broad-except
          pass
      interrupted()
    if self.signal is None:
      say(f'{signal.Signals(signum).name}: stopping after the step in '
          'progress and the one queued behind it (SIGINT again to '
          'interrupt at once)')
    self.signal = signum

  def __call__(self) -> bool:
    return self.signal is not None


@contextlib.contextmanager
def interrupt_raises():
  """Within: SIGINT raises KeyboardInterrupt (Python's own handler), for
  work with nothing to checkpoint that a Ctrl-C should end at once, such
  as a download in a subprocess (which the Ctrl-C reaches too; leaving
  the block kills it). The handler before comes back on exit. Only in
  the main thread, where handlers can be set."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
