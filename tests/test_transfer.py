"""The Python API: nst.transfer, with paths or arrays, equals a run."""
import numpy as np
import pytest
from PIL import Image

import nst
from helpers import TINY, random_vgg19, run_one, tiny_config
from nst import images, memory
from nst.errors import UserError

FIELDS = {k: v for k, v in TINY.items() if k != 'weights'}


@pytest.mark.slow
def test_transfer_of_arrays_equals_the_run_of_their_files(tmp_path):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (30, 40, 3), np.uint8)
  Image.fromarray(photo).save(tmp_path / 'photo.png')
  out = nst.transfer(photo, 'nst:swirls', params=random_vgg19(), **FIELDS)
  assert out.shape == (24, 32, 3) and out.dtype == np.uint8
  config = tiny_config(content_image=str(tmp_path / 'photo.png'),
                       style_image='nst:swirls', optimizer='lbfgs',
                       log_every=10, clip_pixels=True)
  want, _ = run_one(config, random_vgg19())
  np.testing.assert_array_equal(out, images.deprocess(want))
  # Float arrays on 0-1 are the same picture.
  again = nst.transfer(photo / 255.0, 'nst:swirls', params=random_vgg19(),
                       **FIELDS)
  np.testing.assert_array_equal(again, out)
  # uint16 spans 0-65535; an opaque alpha channel changes nothing.
  wide = nst.transfer(photo.astype(np.uint16) * 257, 'nst:swirls',
                      params=random_vgg19(), **FIELDS)
  np.testing.assert_array_equal(wide, out)
  rgba = np.concatenate([photo, np.full((30, 40, 1), 255, np.uint8)], -1)
  np.testing.assert_array_equal(
      nst.transfer(rgba, 'nst:swirls', params=random_vgg19(), **FIELDS), out)


def test_transfer_names_bad_arguments():
  with pytest.raises(UserError, match="unknown config field 'style_wieght'"):
    nst.transfer('skimage:chelsea', 'nst:swirls', style_wieght=2)
  with pytest.raises(UserError, match=r'shape \(4, 4, 2\)'):
    nst.transfer(np.zeros((4, 4, 2)), 'nst:swirls', **FIELDS)
  with pytest.raises(UserError, match="image_size='big' does not fit"):
    nst.transfer('skimage:chelsea', 'nst:swirls', image_size='big')


def test_transfer_refuses_a_run_too_large_for_memory_by_its_arrays_shapes(
    monkeypatch):
  def read_at_size(rgb, height, width):
    raise AssertionError(f'an image was read at {width}x{height} px')

  monkeypatch.setattr(images, 'resize_to', read_at_size)
  strip = np.zeros((10, 1000, 3), np.uint8)
  with pytest.raises(UserError, match='not enough memory') as e:
    nst.transfer(strip, 'nst:swirls', image_size=100000)
  config = nst.api.load_config(nst.api.DEFAULT_CONFIG)
  config.image_size, config.content_image = 100000, 'array:content'
  config.style_image = 'nst:swirls'
  # Estimated at the strip's shape (1000x100000 px), not a square's.
  need = memory.estimate(config, shapes=memory.Shapes(
      {'array:content': (10, 1000)})).on_host
  assert f'needs an estimated {memory.size_text(need)} of RAM' in str(e.value)
