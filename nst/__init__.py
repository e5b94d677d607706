"""nst: neural style transfer (Gatys, Ecker & Bethge 2015) in JAX."""
import importlib.metadata
import os


def _cpu_convolutions_by_eigen() -> None:
  """Has XLA's CPU backend run convolutions with its Eigen kernels rather
  than as YNNPACK fusions.

  Faster whole steps on a CPU (experiments/cpu_kernels). Only for the
  jaxlib versions where this was measured (an XLA flag it does not
  know would abort), only if XLA_FLAGS does not already choose, and only
  effective if nst is imported before JAX starts its CPU backend. CPU only:
  GPU and TPU compilation ignore it.
  """
  flag = '--xla_cpu_experimental_ynn_fusion_type'
  try:
    version = tuple(int(v) for v in importlib.metadata.version(
        'jaxlib').split('.')[:2])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if (0, 10) <= version < (0, 12) and flag not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {flag}='.strip()


_cpu_convolutions_by_eigen()


def __getattr__(name):
  # ``nst.transfer`` (the Python API), imported on first use so that
  # ``import nst`` alone does not start JAX.
  if name == 'transfer':
    from nst.api import transfer  # pylint: disable=import-outside-toplevel
    return transfer
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
