"""How XLA is set up for a process of nst.

``setup()`` is called first thing by every entry point (``nst.run``,
``nst.transfer``, the scripts, the tests' conftest), before JAX starts a
backend; ``compile_cache()`` by ``nst.run`` and the figure scripts once
it has started. Importing nst changes nothing.
"""
import importlib.metadata
import os
from pathlib import Path
import re
import sys
import tempfile
import warnings

# XLA's CPU convolutions by its Eigen kernels instead of YNNPACK fusions:
# faster whole steps on a CPU (experiments/cpu_kernels). Only for the
# jaxlib versions where that was measured: a flag XLA does not know aborts.
EIGEN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
EIGEN_JAXLIB = ((0, 10), (0, 12))  # from, before


def setup() -> None:
  """Sets ``XLA_FLAGS`` for nst's CPU convolutions (``EIGEN_FLAG``), unless
  it already chooses or the installed jaxlib is not one it was measured
  on. Effective only before JAX starts its CPU backend (the first
  computation or device query); GPU and TPU compilation ignore it."""
  try:
    version = tuple(int(v) for v in importlib.metadata.version(
        'jaxlib').split('.')[:2])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  low, high = EIGEN_JAXLIB
  if low <= version < high and EIGEN_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_FLAG}='.strip()


# --- The persistent compilation cache ----------------------------------------

CACHE_ENV = 'NST_COMPILE_CACHE'  # a folder, or 'off'
OFF = ('off', '0', 'false', 'no', 'none')
CACHE_LIMIT = 2 << 30  # bytes of entries kept; older ones go at a run's start
ENTRY = ('-cache', '-atime')  # the ends of JAX's entry file names
CACHE_WARNING = re.compile(
    r"Error (reading|writing) persistent compilation cache entry for "
    r"'[^']*': (.*)", re.S)


def compile_cache(platform: str) -> Path | None:
  """Turns on JAX's persistent compilation cache for this process and
  returns its folder, or None. For after the backend has started
  (``platform``: ``jax.default_backend()``) and before the first
  compilation; ``nst.run`` and the figure scripts call it.

  A default run compiles some 40 programs (scales, targets, step, output);
  on a GPU that is most of a run (512 px on an H200: 65 s of compiling in
  77 s), and a run whose shapes were compiled before loads them instead
  (9 s). ``$NST_COMPILE_CACHE`` names the folder, or 'off'. Unset: on a
  GPU or TPU ``weights.cache_dir()/xla``; on a CPU none, since XLA:CPU
  checks a cached program against the host's features and refuses it on
  some hosts (an error line for each): naming a folder turns it on there
  too. At start the least recently written entries beyond ``CACHE_LIMIT``
  bytes, and empty ones, are removed (JAX's entry files only). A folder
  that cannot be written leaves the cache off; an entry that cannot be
  read is compiled instead, one that cannot be written is not kept: each
  said in one line."""
  import jax  # pylint: disable=import-outside-toplevel

  from nst import errors, weights  # pylint: disable=import-outside-toplevel
  value = os.environ.get(CACHE_ENV, '').strip()
  if value.lower() in OFF or (not value and platform == 'cpu'):
    return None
  folder = (Path(value).expanduser().resolve() if value
            else weights.cache_dir() / 'xla')
  if folder.exists() and not folder.is_dir():
    return _off(f'{folder} is not a folder')
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    return _off(str(errors.cannot_write(folder, e)))
  prune(folder, CACHE_LIMIT)
  _one_line_per_cache_error(folder)
  jax.config.update('jax_compilation_cache_dir', str(folder))
  # Every program: the small ones add up to seconds too.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return folder


def _off(why: str) -> None:
  print(f'compilation cache off: {why}; set {CACHE_ENV} to another folder, '
        'or to off', file=sys.stderr)


def _one_line_per_cache_error(folder: Path) -> None:
  """JAX's warning for an entry it cannot read or write (a full disk, an
  entry cut short) becomes one line, once per process for each of the
  two; the run goes on, compiling a program it cannot read."""
  if getattr(warnings.showwarning, 'nst_cache', False):
    return
  shown, previous = set(), warnings.showwarning

  def show(message, category, filename, lineno, file=None, line=None):
    match = CACHE_WARNING.match(str(message))
    if match is None:
      return previous(message, category, filename, lineno, file, line)
    verb = {'reading': 'read', 'writing': 'write'}[match.group(1)]
    if verb not in shown:
      shown.add(verb)
      reason = match.group(2).strip().splitlines()[0][:200]
      after = ('compiled instead (deleting the folder clears the cache)'
               if verb == 'read' else 'the run goes on without it')
      print(f'compilation cache: cannot {verb} an entry in {folder} '
            f'({reason}); {after}', file=sys.stderr)
    return None
  show.nst_cache = True
  warnings.showwarning = show


def prune(folder, limit: int) -> int:
  """Removes JAX's entry files (names ending in ``ENTRY``) from ``folder``
  that are empty, then the least recently written until the rest hold at
  most ``limit`` bytes; returns how many it removed. Other files and
  subfolders are left alone, and a file that cannot be removed is
  skipped."""
  entries = []
  for entry in os.scandir(folder):
    if entry.name.endswith(ENTRY) and entry.is_file(follow_symlinks=False):
      stat = entry.stat(follow_symlinks=False)
      entries.append((stat.st_mtime, stat.st_size, entry.path))
  total, removed = sum(size for _, size, _ in entries), 0
  for _, size, path in sorted(entries):
    if total <= limit and size > 0:
      continue
    try:
      os.remove(path)
    except FileNotFoundError:  # another process removed it first
      pass
    except OSError:
      continue
    total, removed = total - size, removed + 1
  return removed
