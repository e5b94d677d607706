"""The one exception type for mistakes a user can make.

A ``UserError`` carries a message that names the bad value and what is
accepted. The command line prints it without a traceback and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A bad path, image, layer name or config value given by the user."""
