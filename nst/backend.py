"""How XLA is set up for a process of nst.

``setup()`` is called first thing by every entry point (``nst.run``,
``nst.transfer``, the scripts, the tests' conftest), before JAX starts a
backend; ``compile_cache()`` by ``nst.run`` once it has started. Importing
nst changes nothing.
"""
import importlib.metadata
import os
from pathlib import Path
import sys
import tempfile

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
CACHE_LIMIT = 2 << 30  # bytes kept; older entries go when a run starts


def compile_cache(platform: str) -> Path | None:
  """Turns on JAX's persistent compilation cache for this process and
  returns its folder, or None. For after the backend has started
  (``platform``: ``jax.default_backend()``) and before the first
  compilation; ``nst.run`` calls it.

  A default run compiles some 40 programs (scales, targets, step, output);
  on a GPU that is most of a run (512 px on an H200: 65 s of compiling in
  77 s), and a run whose shapes were compiled before loads them instead
  (9 s). ``$NST_COMPILE_CACHE`` names the folder, or 'off'. Unset: on a
  GPU or TPU ``weights.cache_dir()/xla``; on a CPU none, since XLA:CPU
  checks a cached program against the host's features and refuses it on
  some hosts (an error line for each): naming a folder turns it on there
  too. At start the oldest entries beyond ``CACHE_LIMIT`` bytes are
  removed. A folder that cannot be written leaves the cache off, said in
  one line."""
  import jax  # pylint: disable=import-outside-toplevel

  from nst import weights  # pylint: disable=import-outside-toplevel
  value = os.environ.get(CACHE_ENV, '').strip()
  if value.lower() == 'off' or (not value and platform == 'cpu'):
    return None
  folder = Path(value).expanduser() if value else weights.cache_dir() / 'xla'
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
    prune(folder, CACHE_LIMIT)
  except OSError as e:
    print(f'compilation cache off: cannot write {folder} '
          f'({e.strerror or e}); set {CACHE_ENV} to another folder, or to '
          'off', file=sys.stderr)
    return None
  jax.config.update('jax_compilation_cache_dir', str(folder))
  # Every program: the small ones add up to seconds too.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return folder


def prune(folder, limit: int) -> int:
  """Removes the least recently written files of ``folder`` (not its
  subfolders) until the rest hold at most ``limit`` bytes; returns how
  many it removed."""
  entries = []
  for entry in os.scandir(folder):
    if entry.is_file(follow_symlinks=False):
      stat = entry.stat(follow_symlinks=False)
      entries.append((stat.st_mtime, stat.st_size, entry.path))
  total, removed = sum(size for _, size, _ in entries), 0
  for _, size, path in sorted(entries):
    if total <= limit:
      break
    try:
      os.remove(path)
    except FileNotFoundError:  # another process removed it first
      pass
    total, removed = total - size, removed + 1
  return removed
