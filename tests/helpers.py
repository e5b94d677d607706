"""Small configs and images shared by the tests."""

from configs import default
from nst import images


def tiny_config(**overrides):
  """The default config at 32 px with random weights and few steps, at one
  scale with Adam (tests of L-BFGS or of coarse to fine ask for them)."""
  c = default.get_config()
  c.weights = 'random'
  c.content_image = 'skimage:astronaut'
  c.image_size = 32
  c.num_steps = 2
  c.log_every = 1
  c.save_every = 0
  c.scales = c.scale_steps = ()
  c.optimizer = 'adam'
  c.clip_pixels = True
  for k, v in overrides.items():
    c[k] = v
  return c


def tiny_images(size=32):
  """A content photo and a style texture, Caffe convention, (size, size)."""
  content = images.resize(images.read_rgb('skimage:astronaut'), size)
  style = images.resize(images.swirls(64), size)
  return images.preprocess(content), images.preprocess(style)


def tiny_inputs(size=32):
  """``tiny_images`` as ``stylize.Inputs`` (one style, no masks)."""
  from nst import stylize
  content, style = tiny_images(size)
  return stylize.Inputs(content, [style], None, content)


def tiny_sweep(optimizer='adam', **overrides):
  """A 4-member sweep at 32 px: 2 style layer sets x 2 alpha/beta ratios."""
  import ml_collections
  c = tiny_config(optimizer=optimizer, num_steps=3, log_every=0,
                  style_layer_weights=(), content_image='skimage:astronaut',
                  init='noise', init_noise_std=20.0)
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


def sweep_images(config, devices=None):
  """Runs a sweep without writing files: {member: (float image, metrics)}."""
  from nst import sweep
  _, members = sweep.expand(config)
  loader = sweep.Loader()
  mesh = sweep.member_mesh(devices)
  out = {}
  for g, group in enumerate(sweep.group(members, loader)):
    images_ = {}
    results = sweep.run_group(
        group, loader=loader, mesh=mesh, chunk_size=config.sweep.chunk_size,
        group_index=g, on_image=lambda m, x: images_.setdefault(m.index, x))
    for r in results:
      out[r.member.index] = (images_[r.member.index], r.metrics)
  return out


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
