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


def test_every_array_type_and_pil_mode_is_read_right_or_refused():
  from nst.api import _rgb
  rng = np.random.default_rng(1)
  photo = rng.integers(0, 256, (6, 5, 3), np.uint8)
  white = (255, 255, 255)
  # numpy's default integer types hold 0-255 as uint8 does.
  for dtype in (np.int64, np.int32, np.int16, np.uint32, np.int8):
    values = photo // 2 if dtype == np.int8 else photo
    np.testing.assert_array_equal(_rgb(values.astype(dtype), white), values)
  with pytest.raises(UserError, match=r'dtype int64 with values 0 to 1000: '
                     r'accepted for this type are 0-255'):
    _rgb(np.array([[0, 1000]]), white)
  with pytest.raises(UserError, match='values -1 to 3'):
    _rgb(np.array([[-1, 3]], np.int32), white)
  with pytest.raises(UserError, match='dtype complex128'):
    _rgb(np.zeros((2, 2), complex), white)
  # A PIL image of any mode is read as its file would be: a palette's
  # colours, not its indices; grey spread; 16-bit grey over 0-65535.
  image = Image.fromarray(photo)
  np.testing.assert_array_equal(_rgb(image, white), photo)
  palette = image.convert('P', palette=Image.ADAPTIVE, colors=8)
  np.testing.assert_array_equal(_rgb(palette, white),
                                np.asarray(palette.convert('RGB')))
  grey = Image.fromarray(photo[..., 0])
  np.testing.assert_array_equal(_rgb(grey, white),
                                np.repeat(photo[..., :1], 3, -1))
  wide = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)
  np.testing.assert_array_equal(_rgb(wide, white),
                                np.repeat(photo[..., :1], 3, -1))
  clear = Image.fromarray(np.concatenate(
      [photo, np.zeros((6, 5, 1), np.uint8)], -1))
  np.testing.assert_array_equal(_rgb(clear, white), np.full((6, 5, 3), 255))


def test_an_image_given_twice_is_refused():
  with pytest.raises(UserError, match=r'content_image= and the positional '
                     'content both name the content image'):
    nst.transfer('skimage:chelsea', 'nst:swirls',
                 content_image='skimage:astronaut')
  with pytest.raises(UserError, match='style_image= and the positional style'):
    nst.transfer('skimage:chelsea', 'nst:swirls', style_image='a.jpg')
