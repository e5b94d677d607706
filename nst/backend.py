"""How XLA is set up for a process of nst, before JAX starts a backend.

``setup()`` is called first thing by every entry point (``nst.run``,
``nst.transfer``, the scripts, the tests' conftest); importing nst changes
nothing.
"""
import importlib.metadata
import os

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
