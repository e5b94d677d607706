"""The one exception type for mistakes a user can make.

A ``UserError`` carries a message that names the bad value and what is
accepted. The command line prints it without a traceback and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""
import errno


class UserError(Exception):
  """A bad path, image, layer name or config value given by the user."""


class Diverged(UserError):
  """The loss became non-finite. ``step`` is the first log step where it
  was seen; ``last_finite`` is ``(step, image)`` of the latest log step
  whose loss was finite (``None`` if none was), the image as the run
  would have written it."""

  def __init__(self, message: str, step: int, last_finite=None):
    super().__init__(message)
    self.step, self.last_finite = step, last_finite


class DiskFull(UserError):
  """A file system ran out of space or quota while a file was written
  (ENOSPC, EDQUOT); the files written before are intact. The command line
  exits 1, not 2: the run was right, the machine was short."""


def cannot_write(path, error: OSError, action: str = 'write') -> UserError:
  """The one error for ``error``, raised writing (``action``) ``path``:
  ``cannot write 'path': cause``, a ``DiskFull`` if the file system is
  full."""
  message = f'cannot {action} {str(path)!r}: {error.strerror or error}'
  if error.errno in (errno.ENOSPC, errno.EDQUOT):
    return DiskFull(message)
  return UserError(message)


class Stopped(Exception):
  """The run was asked to stop (SIGINT or SIGTERM) after ``step`` steps and
  has, if ``saved``, saved its finite members' outputs at that step
  (``Callbacks.save``) and, if ``checkpointed``, a checkpoint to continue
  from (not when no image was finite any more, nor when it stopped while
  compiling its first step). Not an error."""

  def __init__(self, step: int, checkpointed: bool = True,
               saved: bool = True):
    super().__init__(f'stopped after step {step}')
    self.step, self.checkpointed, self.saved = step, checkpointed, saved
