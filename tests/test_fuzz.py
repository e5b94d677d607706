"""Fuzzing the image reader and the config validator: random and mutated
inputs give a result or a UserError, never another exception or a hang;
a config that passes also has its memory estimated without one."""
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import tiny_config
from nst import images, memory, spec, vgg
from nst.errors import UserError

# PIL warns about the corrupt files it is given; that is what they are.
pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
FUZZ = settings(max_examples=150, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _encoded(fmt: str, mode: str) -> bytes:
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
  im = Image.fromarray(pixels, 'RGBA').convert(mode)
  buf = io.BytesIO()
  im.save(buf, format=fmt)
  return buf.getvalue()


SEEDS = [_encoded(f, m) for f, m in (('PNG', 'RGBA'), ('PNG', 'P'),
                                     ('JPEG', 'RGB'), ('GIF', 'P'),
                                     ('BMP', 'RGB'), ('TIFF', 'CMYK'),
                                     ('PNG', 'I;16'), ('WEBP', 'RGB'))]


@st.composite
def mutated(draw):
  """A valid image file with bytes flipped, cut, or spliced with noise."""
  data = bytearray(draw(st.sampled_from(SEEDS)))
  for _ in range(draw(st.integers(1, 8))):
    kind = draw(st.sampled_from(['flip', 'cut', 'insert']))
    at = draw(st.integers(0, len(data) - 1))
    if kind == 'flip':
      data[at] = draw(st.integers(0, 255))
    elif kind == 'cut':
      del data[at:at + draw(st.integers(1, 64))]
      if not data:
        break
    else:
      data[at:at] = draw(st.binary(min_size=1, max_size=32))
  return bytes(data)


def _read(tmp_path, data: bytes):
  path = tmp_path / 'x.img'
  path.write_bytes(data)
  try:
    rgb = images.read_rgb(str(path), max_pixels=1_000_000)
  except UserError as e:
    assert str(e)  # a message, on one line
    return None
  assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
  assert min(rgb.shape[:2]) >= 2 and rgb.size <= 3 * 1_000_000
  return rgb


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_read_or_user_error(tmp_path, data):
  _read(tmp_path, data)


@FUZZ
@given(data=mutated())
def test_mutated_images_read_or_user_error(tmp_path, data):
  _read(tmp_path, data)


LAYERS = vgg.layer_names('vgg19')
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**6, 10**6).map(float))
layer_sets = st.lists(st.one_of(st.sampled_from(LAYERS),
                                st.text(max_size=8)), max_size=6).map(tuple)


@st.composite
def configs(draw):
  c = tiny_config()
  fields = {
      'image_size': st.integers(-10, 5000),
      'content_weight': numbers, 'style_weight': numbers,
      'tv_weight': numbers, 'learning_rate': numbers,
      'lr_decay_rate': numbers, 'lr_decay_steps': st.integers(-5, 500),
      'num_steps': st.integers(-5, 50), 'log_every': st.integers(-5, 50),
      'checkpoint_every': st.integers(-5, 50),
      'content_layers': layer_sets, 'style_layers': layer_sets,
      'style_layer_weights': st.lists(numbers, max_size=6).map(tuple),
      'style_blend_weights': st.lists(numbers, max_size=3).map(tuple),
      'optimizer': st.sampled_from(['adam', 'lbfgs', 'sgd', '', 'ADAM']),
      'init': st.sampled_from(['content', 'noise', 'nst:swirls', 'bogus',
                               '/no/such/file.png', '']),
      'pooling': st.sampled_from(['max', 'avg', 'min']),
      'network': st.sampled_from(['vgg19', 'vgg16', 'i2v', 'resnet']),
      'compute_dtype': st.sampled_from(['float32', 'bfloat16', 'float16']),
      'style_scale': numbers, 'avg_decay': numbers,
      'alpha_background': st.lists(st.integers(-300, 300), min_size=0,
                                   max_size=4).map(tuple),
      'max_image_pixels': st.integers(-5, 10**9),
      'scales': st.lists(st.integers(-10, 300), max_size=3).map(tuple),
  }
  chosen = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1,
                         max_size=6, unique=True))
  for name in chosen:
    c[name] = draw(fields[name])
  return c


@FUZZ
@given(config=configs())
def test_random_configs_pass_or_user_error(config):
  try:
    spec.check(config)
  except UserError as e:
    assert str(e) and '\n' not in str(e)
    return
  # What passed is runnable as far as the validator promises.
  assert config.image_size >= 1
  for field in ('content_weight', 'style_weight', 'tv_weight'):
    assert math.isfinite(config[field]) and config[field] >= 0
  # Its memory is estimated, and it fits or is refused in one line.
  try:
    memory.check(config)
  except UserError as e:
    assert str(e).startswith('not enough memory') and '\n' not in str(e)


@pytest.mark.parametrize('fmt,mode', [('PNG', 'RGBA'), ('JPEG', 'RGB')])
def test_the_seeds_themselves_read(tmp_path, fmt, mode):
  assert _read(tmp_path, _encoded(fmt, mode)).shape == (12, 10, 3)
