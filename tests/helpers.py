"""Small configs, images and runs shared by the tests."""
import contextlib
import functools
import importlib.util
from pathlib import Path

from configs import default
from nst import engine, images, spec, step, targets, weights

# What makes a run tiny: random weights, 32 px, two steps, one scale.
TINY = {'weights': 'random', 'image_size': 32, 'num_steps': 2, 'scales': (),
        'scale_steps': (), 'min_scale_size': 0}


def tiny_config(**overrides):
  """The default config made ``TINY``, on the astronaut photo, with Adam,
  a log at every step and no saved images (tests of L-BFGS or of coarse
  to fine ask for them)."""
  c = default.get_config()
  fields = {**TINY, 'content_image': 'skimage:astronaut', 'log_every': 1,
            'save_every': 0, 'optimizer': 'adam', 'clip_pixels': True,
            **overrides}
  if 'style_layers' in overrides and 'style_layer_trims' not in overrides:
    # The default's trims are one per default style layer; a test of other
    # layers asks for its own.
    fields['style_layer_trims'] = ()
  for k, v in fields.items():
    c[k] = v
  return c


def tiny_flags(**overrides) -> list[str]:
  """``TINY`` (and ``overrides``) as ``python -m nst.run`` flags, on top of
  configs/default.py's other values."""
  return [f'--config.{k}={v}' for k, v in {**TINY, **overrides}.items()]


@functools.cache
def random_vgg19():
  """Random VGG-19 params, built once per test session."""
  return weights.random_params('vgg19')


def tiny_images(size=32):
  """A content photo and a style texture, Caffe convention, (size, size)."""
  content = images.resize(images.read_rgb('skimage:astronaut'), size)
  style = images.resize(images.swirls(64), size)
  return images.preprocess(content), images.preprocess(style)


def tiny_inputs(size=32):
  """``tiny_images`` as ``targets.Inputs`` (one style, no masks)."""
  content, style = tiny_images(size)
  return targets.Inputs(content, [style], None, content)


def program_of(config) -> spec.Program:
  """``config`` checked and resolved: its ``spec.Program``."""
  return spec.resolve(config, targets.image_loader(config)).program


def model_of(config):
  """The network ``config`` runs."""
  return step.make_model(program_of(config))


class Recorder(engine.Callbacks):
  """Hands the engine's logs, saves and checkpoints to plain functions:
  ``on_log(step, row)``, ``on_save(step, image)``, ``on_checkpoint(ckpt)``."""

  def __init__(self, on_log=None, on_save=None, on_checkpoint=None):
    self.on_log, self.on_save = on_log, on_save
    self.on_checkpoint = on_checkpoint

  def log(self, row):
    if self.on_log:
      self.on_log(row['step'], row)

  def save(self, member, step_, image):
    if self.on_save:
      self.on_save(step_, image)

  def checkpoint(self, ckpt):
    if self.on_checkpoint:
      self.on_checkpoint(ckpt)


def run_one(config, params, *, on_log=None, on_save=None, on_checkpoint=None,
            **kwargs):
  """``engine.stylize`` (one run, nothing on disk) with plain callbacks:
  (output, last metrics)."""
  return engine.stylize(config, params=params, callbacks=Recorder(
      on_log, on_save, on_checkpoint), **kwargs)


def tiny_sweep(optimizer='adam', **overrides):
  """A 4-member sweep at 32 px: 2 style layer sets x 2 alpha/beta ratios."""
  import ml_collections
  c = tiny_config(optimizer=optimizer, num_steps=3, log_every=0,
                  style_layer_weights=(), style_layer_trims=(),
                  content_image='skimage:astronaut', init='noise',
                  init_noise_std=20.0)
  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  c.sweep.axes.style_layers = (('conv1_1',), ('conv1_1', 'conv2_1', 'conv3_1'))
  c.sweep.axes.ratio = (1e-3, 1e-1)
  c.sweep.zip = ()
  c.sweep.rows = 'style_layers'
  c.sweep.cols = 'ratio'
  c.sweep.chunk_size = 0
  for k, v in overrides.items():
    c[k] = v
  return c


class _Images(engine.Callbacks):
  def __init__(self):
    self.images = {}

  def image(self, member, image):
    self.images.setdefault(member.index, image)


def sweep_images(config, devices=None):
  """Runs a sweep without writing files: {member: (float image, metrics)}."""
  from nst import sweep
  loader = engine.Loader()
  _, members = sweep.expand(config, loader.images_for)
  kept = _Images()
  results = engine.run(sweep.group(members), loader=loader, devices=devices,
                       chunk_size=config.sweep.chunk_size, callbacks=kept)
  return {r.member.index: (kept.images[r.member.index], r.metrics)
          for r in results}


def tiny_sweep_file(path, *body):
  """Writes a config file for ``python -m nst.run --config`` whose
  ``get_config()`` runs the lines ``body`` (``tiny_sweep`` in scope) and
  returns ``c``; returns ``path``."""
  from pathlib import Path
  path = Path(path)
  path.write_text(
      'import sys\n'
      f'sys.path.insert(0, {str(Path(__file__).parent)!r})\n'
      'from helpers import tiny_sweep\n\n'
      'def get_config():\n'
      + ''.join(f'  {line}\n' for line in body) + '  return c\n')
  return path


def stop_after(n, raising: BaseException | None = None):
  """A should_stop that says yes (or raises ``raising``, as a crash would)
  the ``n``-th time it is asked after a step. (The engine also asks while
  a step compiles, on its thread ``engine.COMPILING``; those asks are
  answered no and not counted.)"""
  import threading
  asked = []

  def should_stop():
    if any(t.name == engine.COMPILING and t.is_alive()
           for t in threading.enumerate()):
      return False
    asked.append(1)
    if len(asked) == n and raising is not None:
      raise raising
    return len(asked) == n
  return should_stop


def without_blocking(call, *pipes, wait=30.0):
  """``call()``, run in a thread: its result, or its exception raised here.
  If it is still running after ``wait`` seconds (blocked opening one of
  the named ``pipes``, which waits for a writer), each pipe is opened for
  writing, which releases it, and the test fails instead of hanging."""
  import os
  import threading
  import pytest
  out = {}

  def target():
    try:
      out['value'] = call()
    except BaseException as e:  # pylint: disable=broad-except
      out['error'] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(wait)
  if thread.is_alive():
    for pipe in pipes:
      try:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
      except OSError:
        pass
    pytest.fail(f'blocked opening a named pipe: {call}')
  if 'error' in out:
    raise out['error']
  return out.get('value')


# --- File systems that refuse writes ----------------------------------------
# Tests may run as root, whom permissions do not stop: a read-only or full
# file system is a tmpfs mounted for the test where this process may mount
# (``tmpfs``, else the test is skipped), or the OSError injected where
# every file is written (``images.write_atomic``'s temporary file).


@contextlib.contextmanager
def tmpfs(path, size='4m'):
  """A tmpfs of ``size`` mounted on the new folder ``path`` for the block;
  the test is skipped where this process may not mount."""
  import subprocess
  import pytest
  path.mkdir()
  try:
    mounted = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
        capture_output=True).returncode == 0
  except OSError:  # no mount command
    mounted = False
  if not mounted:
    pytest.skip('this process may not mount a tmpfs')
  try:
    yield path
  finally:
    if subprocess.run(['umount', str(path)]).returncode != 0:
      subprocess.run(['umount', '-l', str(path)])


def remount_read_only(path):
  import subprocess
  subprocess.run(['mount', '-o', 'remount,ro', str(path)], check=True)


def fill(folder):
  """Fills the file system of ``folder`` (a tmpfs) up to its last byte."""
  import errno
  block = bytes(1 << 16)
  with open(folder / 'filler', 'wb', buffering=0) as f:
    try:
      while True:
        f.write(block)
    except OSError as e:
      assert e.errno == errno.ENOSPC, e


def _refusing(error_number):
  import os
  error = OSError(error_number, os.strerror(error_number))

  def refuse(*args, **kwargs):
    raise error
  return refuse


def inject_read_only(monkeypatch):
  """Every new file is refused as on a read-only file system."""
  import errno
  import tempfile
  monkeypatch.setattr(tempfile, 'mkstemp', _refusing(errno.EROFS))


class _FullFile:
  """A file whose writes fail as on a full file system."""

  def __init__(self, f):
    self.f = f

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()

  def write(self, data):
    import errno
    _refusing(errno.ENOSPC)()

  def flush(self):
    pass

  def close(self):
    self.f.close()


def inject_full_disk(monkeypatch):
  """Every write of a file that ``images.write_atomic`` (os.fdopen) or a
  run's metrics.jsonl (open, in ``nst.runner``) makes fails as on a full
  file system."""
  import os
  from nst import runner
  fdopen = os.fdopen
  monkeypatch.setattr(os, 'fdopen', lambda *a, **k: _FullFile(fdopen(*a, **k)))
  monkeypatch.setattr(runner, 'open', lambda *a, **k: _FullFile(open(*a, **k)),
                      raising=False)


def load_script(name: str):
  """scripts/<name>.py imported as a module (the scripts are not a
  package)."""
  path = Path(__file__).resolve().parents[1] / 'scripts' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
