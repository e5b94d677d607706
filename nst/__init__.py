"""nst: neural style transfer (Gatys, Ecker & Bethge 2015) in JAX."""
def __getattr__(name):
  # ``nst.transfer`` (the Python API), imported on first use so that
  # ``import nst`` alone does not start JAX.
  if name == 'transfer':
    from nst.api import transfer  # pylint: disable=import-outside-toplevel
    return transfer
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
