"""Small configs and images shared by the tests."""
import numpy as np

from configs import default
from nst import images


def tiny_config(**overrides):
  """The default config at 32 px with random weights and few steps."""
  c = default.get_config()
  c.weights = 'random'
  c.image_size = 32
  c.num_steps = 2
  c.log_every = 1
  c.save_every = 0
  for k, v in overrides.items():
    c[k] = v
  return c


def tiny_images(size=32):
  """A content photo and a style texture, Caffe convention, (size, size)."""
  content = images.resize(images.read_rgb('skimage:astronaut'), size)
  style = images.resize(images.swirls(64), size)
  return images.preprocess(content), images.preprocess(style)
