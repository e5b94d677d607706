"""scripts/side_by_side.py: the row's layout, and its user errors as one
line each with nothing written."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    'side_by_side', ROOT / 'scripts' / 'side_by_side.py')
side_by_side = importlib.util.module_from_spec(spec)
spec.loader.exec_module(side_by_side)


def _png(path, rgb):
  Image.fromarray(rgb).save(path)
  return str(path)


def test_tiles_at_one_height_with_white_gaps(tmp_path):
  red = _png(tmp_path / 'red.png', np.full((10, 20, 3), (255, 0, 0),
                                           np.uint8))
  blue = _png(tmp_path / 'blue.png', np.full((20, 10, 3), (0, 0, 255),
                                             np.uint8))
  out = tmp_path / 'row.png'
  assert side_by_side.main([str(out), red, blue, '--height', '20']) == 0
  row = np.asarray(Image.open(out))
  # red becomes 40x20, then an 8 px gap, then blue at 10x20.
  assert row.shape == (20, 40 + 8 + 10, 3)
  assert (row[:, :40] == (255, 0, 0)).all()
  assert (row[:, 40:48] == 255).all()
  assert (row[:, 48:] == (0, 0, 255)).all()


@pytest.mark.parametrize('args, message', [
    (['--height', '0'], '--height 0: accepted is a whole number of pixels '
     '>= 1'),
    (['--height', '1000000'], 'needs about'),
])
def test_bad_heights_are_one_line(tmp_path, capsys, args, message):
  if message == 'needs about':
    from nst import memory
    if 'host' not in memory.available():
      pytest.skip('this host does not say how much memory is free')
  out = tmp_path / 'row.png'
  assert side_by_side.main([str(out), 'nst:swirls', *args]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert message in err and not out.exists()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
  for out in (tmp_path / 'missing' / 'row.png', tmp_path):
    assert side_by_side.main([str(out), 'nst:swirls', '--height', '16']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1
  assert not (tmp_path / 'missing').exists()


def test_an_output_naming_an_input_is_refused_and_the_input_kept(tmp_path,
                                                                 capsys):
  red = _png(tmp_path / 'red.png', np.full((10, 20, 3), 200, np.uint8))
  before = Path(red).read_bytes()
  assert side_by_side.main([red, red, 'nst:swirls']) == 2
  assert 'is one of the images to lay out' in capsys.readouterr().err
  assert Path(red).read_bytes() == before
