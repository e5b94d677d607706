"""The files a user names, or a run finds in its folder: only regular files
are opened.

A named pipe (FIFO) blocks ``open`` until something writes to it, a device
may never end, a directory cannot be read as a file: each is refused before
it is opened, as one UserError naming the path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from nst.errors import UserError


def check_regular(path: str | os.PathLike, what: str) -> Path:
  """``path`` as a Path if it names a regular file (after following
  links); else a UserError: ``{what} 'path' does not exist``, ``... is a
  directory, not a file`` or ``... is not a regular file``."""
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise UserError(f'{what} {str(path)!r} does not exist') from None
  except OSError as e:
    raise UserError(f'{what} {str(path)!r}: {e.strerror or e}') from None
  if stat.S_ISDIR(mode):
    raise UserError(f'{what} {str(path)!r} is a directory, not a file')
  if not stat.S_ISREG(mode):
    raise UserError(f'{what} {str(path)!r} is not a regular file')
  return Path(path)
