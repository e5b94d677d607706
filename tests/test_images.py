"""Reading images of every common kind, and refusing bad ones clearly."""
import numpy as np
import pytest
from PIL import Image

from nst import images, spec
from nst import targets as nst_targets
from nst.errors import UserError


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  grey = np.array([[0, 257, 32896], [65535, 65535 // 2, 1000]], np.uint16)
  Image.fromarray(grey).save(tmp_path / 'g16.png')
  rgb = images.read_rgb(str(tmp_path / 'g16.png'))
  assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 128], [255, 127, 4]])
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_float_grey_on_0_1(tmp_path):
  Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)).save(
      tmp_path / 'f.tif')
  rgb = images.read_rgb(str(tmp_path / 'f.tif'))
  np.testing.assert_array_equal(rgb[..., 1], [[0, 128], [255, 64]])


def test_cmyk_palette_alpha_and_exif_rotation(tmp_path):
  Image.new('CMYK', (4, 2), (0, 255, 255, 0)).save(tmp_path / 'cmyk.tif')
  np.testing.assert_array_equal(images.read_rgb(str(tmp_path / 'cmyk.tif'))[
      0, 0], [255, 0, 0])
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (0, 0, 255, 255)  # opaque blue; the rest fully transparent
  Image.fromarray(rgba).save(tmp_path / 'a.png')
  rgb = images.read_rgb(str(tmp_path / 'a.png'))
  np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
  np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])  # on white
  Image.fromarray(rgba[..., :3]).convert('P').save(tmp_path / 'p.png')
  assert images.read_rgb(str(tmp_path / 'p.png'))[0, 0, 2] == 255
  # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 4x2
  # stored image is shown, and read, as 2 wide and 4 high.
  im = Image.new('RGB', (4, 2), (10, 20, 30))
  exif = Image.Exif()
  exif[0x0112] = 6
  im.save(tmp_path / 'r.jpg', exif=exif)
  assert images.read_rgb(str(tmp_path / 'r.jpg')).shape == (4, 2, 3)


def test_bad_images_are_one_clear_error(tmp_path, monkeypatch):
  Image.new('RGB', (64, 64), (1, 2, 3)).save(tmp_path / 'ok.png')
  data = (tmp_path / 'ok.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
  (tmp_path / 'text.png').write_text('not an image')
  Image.new('RGB', (1, 1)).save(tmp_path / 'dot.png')
  cases = {'cut.png': 'cannot read image', 'text.png': 'cannot read image',
           'dot.png': 'is 1x1 px; at least 2x2', 'none.png': 'does not exist',
           '.': 'is a directory'}
  for name, message in cases.items():
    with pytest.raises(UserError, match=message):
      images.read_rgb(str(tmp_path / name))
  # Above the limit an image is refused before it is decoded.
  decoded = []
  monkeypatch.setattr(Image.Image, 'load', lambda im: decoded.append(im))
  with pytest.raises(UserError, match=r"refusing image .*ok.png.*64x64 = "
                     r"4096 px is more than max_image_pixels=4095"):
    images.read_rgb(str(tmp_path / 'ok.png'), max_pixels=4095)
  assert decoded == []
  monkeypatch.undo()
  assert images.read_rgb(str(tmp_path / 'ok.png'), max_pixels=4096).shape == (
      64, 64, 3)
  # A limit above PIL's own applies (PIL's global is left as it was).
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  assert images.read_rgb(str(tmp_path / 'ok.png')).shape == (64, 64, 3)
  assert Image.MAX_IMAGE_PIXELS == 1000


def test_alpha_is_composited_on_the_configured_colour(tmp_path):
  from helpers import tiny_config
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[:16] = (0, 0, 255, 255)    # opaque blue top half
  rgba[16:] = (255, 0, 0, 128)    # half-transparent red bottom half
  Image.fromarray(rgba).save(tmp_path / 'a.png')
  config = tiny_config(content_image=str(tmp_path / 'a.png'),
                       alpha_background=(0, 255, 0))
  inputs = nst_targets.load_inputs(config, 32)
  rgb = images.deprocess(inputs.original)
  np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
  # 128/255 of red over green: (255 * 128 + 0 * 127) / 255 etc.
  np.testing.assert_allclose(rgb[-1, -1], [128, 127, 0], atol=1)
  for bad in ((0, 255), (0, 256, 0), (0.5, 0, 0)):
    with pytest.raises(UserError, match=r'alpha_background=.*accepted is '
                       r'\(R, G, B\)'):
      spec.check(tiny_config(alpha_background=bad))
  with pytest.raises(UserError, match='max_image_pixels=0: accepted'):
    spec.check(tiny_config(max_image_pixels=0))


def test_overlapping_reads_in_threads_restore_pils_limit(tmp_path,
                                                        monkeypatch):
  # read_rgb lifts PIL's global MAX_IMAGE_PIXELS while it decodes. Two reads
  # that overlap (the first finishing while the second is inside) must not
  # leave it lifted: the second would put back the None it found.
  import threading
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'a.png')
  original = Image.MAX_IMAGE_PIXELS
  inside = [threading.Event(), threading.Event()]
  go = [threading.Event(), threading.Event()]
  transpose = images.ImageOps.exif_transpose
  calls = []

  def slow_transpose(im):
    k = len(calls)
    calls.append(k)
    inside[k].set()
    go[k].wait(10)
    return transpose(im)

  monkeypatch.setattr(images.ImageOps, 'exif_transpose', slow_transpose)
  results = []
  read = lambda: results.append(images.read_rgb(str(tmp_path / 'a.png')))
  first, second = threading.Thread(target=read), threading.Thread(target=read)
  first.start()
  assert inside[0].wait(10)
  second.start()
  # Unguarded, the second read would be inside by now, holding None.
  inside[1].wait(0.5)
  go[0].set()
  first.join(10)
  go[1].set()
  second.join(10)
  assert len(results) == 2 and Image.MAX_IMAGE_PIXELS == original


def test_a_named_pipe_is_refused_not_opened(tmp_path):
  import os
  from helpers import without_blocking
  pipe = tmp_path / 'pipe.png'
  os.mkfifo(pipe)
  with pytest.raises(UserError, match=f"^image '{pipe}' is not a regular "
                     'file$'):
    without_blocking(lambda: images.read_rgb(str(pipe)), pipe)
  # In a folder of images it is named, not silently left out.
  Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
  (tmp_path / 'b.png').mkdir()  # a folder is no image: left out
  with pytest.raises(UserError, match=f"^image '{pipe}' is not a regular "
                     'file$'):
    images.folder_images(tmp_path)
  pipe.unlink()
  assert images.folder_images(tmp_path) == (str(tmp_path / 'a.png'),)


def test_a_colour_key_is_composited_like_alpha(tmp_path):
  """A PNG's tRNS chunk may name one colour (RGB) or grey level (8- or
  16-bit) as transparent: those pixels become the background."""
  background = (0, 255, 0)
  rgb = np.full((4, 4, 3), (200, 100, 50), np.uint8)
  rgb[0, 0] = rgb[3, 1] = (10, 20, 30)
  grey = np.full((4, 4), 7, np.uint8)
  grey[0, 0] = grey[3, 1] = 99
  wide = np.full((4, 4), 1000, np.uint16)  # 1000 / 65535 of white: 4
  wide[0, 0] = wide[3, 1] = 40000
  for name, pixels, key, others in (
      ('rgb.png', rgb, (10, 20, 30), (200, 100, 50)),
      ('grey.png', grey, 99, (7, 7, 7)),
      ('wide.png', wide, 40000, (4, 4, 4))):
    Image.fromarray(pixels).save(tmp_path / name, transparency=key)
    with Image.open(tmp_path / name) as im:
      assert (im.mode, im.info['transparency']) == (
          {'rgb.png': 'RGB', 'grey.png': 'L', 'wide.png': 'I;16'}[name], key)
    want = np.empty((4, 4, 3), np.uint8)
    want[...] = others
    want[0, 0] = want[3, 1] = background
    np.testing.assert_array_equal(
        images.read_rgb(str(tmp_path / name), background=background), want,
        err_msg=name)


def test_source_shapes_come_from_headers(tmp_path):
  im = Image.new('RGB', (40, 30))
  im.save(tmp_path / 'a.png')
  exif = Image.Exif()
  exif[0x0112] = 6  # shown rotated by 90 degrees
  im.save(tmp_path / 'r.jpg', exif=exif)
  for source in (str(tmp_path / 'a.png'), str(tmp_path / 'r.jpg'),
                 'skimage:chelsea', 'nst:swirls'):
    assert images.source_shape(source) == images.read_rgb(source).shape[:2]
  assert images.source_shape(str(tmp_path / 'missing.png')) is None
  (tmp_path / 'not.png').write_bytes(b'not an image')
  assert images.source_shape(str(tmp_path / 'not.png')) is None
  assert images.source_shape('skimage:nothing') is None
  rgb = np.zeros((30, 41, 3), np.uint8)
  assert images.resize(rgb, 17).shape[:2] == images.resized_shape(30, 41, 17)


def _raw_png(path, rows: bytes, width, height, depth, colour_type, trns):
  """A PNG written chunk by chunk: bit depths PIL does not write."""
  import struct
  import zlib

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  path.write_bytes(
      b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
          '>IIBBBBB', width, height, depth, colour_type, 0, 0, 0))
      + chunk(b'tRNS', trns) + chunk(b'IDAT', zlib.compress(rows))
      + chunk(b'IEND', b''))
  return str(path)


def test_a_colour_key_at_16_or_2_bits_is_composited(tmp_path):
  import struct
  green = (0, 255, 0)
  # 16-bit RGB, 2x2: the keyed pixel and another colour, twice.
  pixels = np.array([[1000, 2000, 3000], [40000, 40000, 40000]], '>u2')
  rgb16 = _raw_png(tmp_path / 'rgb16.png', 2 * (b'\0' + pixels.tobytes()),
                   2, 2, 16, 2, struct.pack('>HHH', 1000, 2000, 3000))
  got = images.read_rgb(rgb16, background=green)
  assert got[0, 0].tolist() == list(green)
  assert got[0, 1].tolist() == [40000 >> 8] * 3
  # 2-bit grey, 4x2: levels 0-3 (PIL: 0, 85, 170, 255); level 3 is keyed.
  grey2 = _raw_png(tmp_path / 'grey2.png', 2 * (b'\0' + bytes([0b00011011])),
                   4, 2, 2, 0, struct.pack('>H', 3))
  got = images.read_rgb(grey2, background=green)
  assert got[0, :, 0].tolist() == [0, 85, 170, 0]
  assert got[0, 3].tolist() == list(green)


def test_a_url_or_a_comma_in_a_file_name_is_one_clear_error(tmp_path):
  with pytest.raises(UserError, match="^image 'http://example.com/a.jpg' is "
                     'a URL; images are read from files'):
    images.read_rgb('http://example.com/a.jpg')
  odd = tmp_path / 'a,b.png'
  Image.new('RGB', (8, 8)).save(odd)
  config = type('C', (), {'style_image': str(odd)})()
  with pytest.raises(UserError, match='is one file whose name has a comma'):
    spec.style_specs(config)
  config.style_image = f'{odd.parent / "a.png"},nst:swirls'
  assert spec.style_specs(config) == [str(odd.parent / 'a.png'),
                                      'nst:swirls']
