"""Figures 1 and 2 end to end at 32 px with random weights."""
import json
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from nst import figures, images

ROOT = Path(__file__).resolve().parents[1]
TINY = {**helpers.TINY, 'optimizer': 'adam', 'log_every': 0}


@pytest.fixture(scope='module')
def paper_images(tmp_path_factory):
  """Stand-ins for the paper's images; Composition VII is missing."""
  folder = tmp_path_factory.mktemp('paper')
  sources = {'tubingen.jpg': 'skimage:astronaut',
             'starry_night.jpg': 'nst:swirls',
             'shipwreck.jpg': 'skimage:coffee',
             'the_scream.jpg': 'skimage:rocket',
             'seated-nude.jpg': 'skimage:chelsea'}
  for name, spec in sources.items():
    Image.fromarray(images.resize(images.read_rgb(spec), 48)).save(
        folder / name)
  return folder


def _config(figure, **overrides):
  path = ROOT / 'configs' / 'sweeps' / f'fig{figure}.py'
  c = runpy.run_path(str(path))['get_config']()
  for k, v in {**TINY, **overrides}.items():
    c[k] = v
  return c


def _png(path):
  return np.asarray(Image.open(path).convert('RGB'))


@pytest.mark.slow
def test_figure2_panels_insets_and_missing_painting(paper_images, tmp_path,
                                                    capsys):
  out = figures.run(2, _config(2), paper_images, tmp_path)
  err = capsys.readouterr().err
  assert f'missing {paper_images / "composition_vii.jpg"}' in err
  # Four members ran (B-E); one contact sheet, since ratio is zipped with
  # the style images.
  assert len(list((tmp_path / 'members').glob('*.png'))) == 4
  assert sorted(p.name for p in tmp_path.glob('contact_sheet*.png')) == [
      'contact_sheet.png']
  drawn = _png(out)
  # Redraw from the members: the same picture, panel by panel.
  results = [types.SimpleNamespace(
      member=types.SimpleNamespace(config=types.SimpleNamespace(
          style_image=str(paper_images / p.file), content_weight=1.0,
          style_weight=1.0 / p.ratio)),
      image=f'members/{i:04d}.png')
      for i, p in enumerate(figures.FIG2_PAINTINGS[:4])]
  redrawn, layout = figures.figure2(tmp_path, results, paper_images, 32)
  np.testing.assert_array_equal(drawn, np.asarray(redrawn))
  boxes = layout['panels']
  assert len(boxes) == 6
  # Panel A is the photo, resized like the content image.
  photo = images.resize(images.read_rgb(str(paper_images / 'tubingen.jpg')),
                        32)
  x0, y0 = boxes[0][:2]
  np.testing.assert_array_equal(drawn[y0:y0 + 32, x0:x0 + 32], photo)
  # Panels B-E: the member's image, except the painting inset at the lower
  # left, which is not the result.
  for k in range(1, 5):
    x0, y0 = boxes[k][:2]
    result = _png(tmp_path / f'members/{k - 1:04d}.png')
    panel = drawn[y0:y0 + 32, x0:x0 + 32]
    np.testing.assert_array_equal(panel[:16], result[:16])  # top half
    np.testing.assert_array_equal(panel[:, 16:], result[:, 16:])
    assert not np.array_equal(panel[-8:, :8], result[-8:, :8])
  # Panel F (missing) is empty: white inside its grey outline.
  x0, y0, x1, y1 = boxes[5]
  assert (drawn[y0 + 1:y1 - 1, x0 + 1:x1 - 1] == 255).all()
  assert (drawn[y0, x0:x1] != 255).any()
  assert layout['captions'][5].endswith(
      'alpha/beta = 0.0001\n(missing image)')  # the paper's F


def test_a_missing_panel_is_captioned_with_the_ratio_asked_for(
    paper_images, tmp_path):
  config = _config(2, num_steps=1)
  config.sweep.axes.ratio = (1e-5, 1e-5, 1e-5, 1e-6, 2e-6)
  figures.run(2, config, paper_images, tmp_path)
  results = [types.SimpleNamespace(
      member=types.SimpleNamespace(config=types.SimpleNamespace(
          style_image=str(paper_images / p.file), content_weight=1.0,
          style_weight=1.0 / r)),
      image=f'members/{i:04d}.png')
      for i, (p, r) in enumerate(zip(figures.FIG2_PAINTINGS[:4],
                                     config.sweep.axes.ratio))]
  ratios = figures.planned_ratios(figures.rebase(config, paper_images))
  assert ratios['composition_vii.jpg'] == 2e-6
  drawn = _png(tmp_path / 'figure2.png')
  redrawn, layout = figures.figure2(tmp_path, results, paper_images, 32,
                                    ratios)
  np.testing.assert_array_equal(drawn, np.asarray(redrawn))
  assert [c.split('alpha/beta = ')[1] for c in layout['captions'][1:]] == [
      '1e-05', '1e-05', '1e-05', '1e-06', '2e-06\n(missing image)']


@pytest.mark.slow
def test_figure1_from_the_command_line(paper_images, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'figure1.py'),
       f'--images={paper_images}', f'--workdir={tmp_path}',
       *helpers.tiny_flags(optimizer='adam', log_every=0)],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '10 members in 1 group(s)' in result.stdout
  drawn = _png(tmp_path / 'figure1.png')
  fake = [types.SimpleNamespace(member=types.SimpleNamespace(index=i),
                                image=f'members/{i:04d}.png')
          for i in range(10)]
  layers = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
  redrawn, layout = figures.figure1(tmp_path, fake, layers)
  np.testing.assert_array_equal(drawn, np.asarray(redrawn))
  assert len(layout['cells']) == 10 and len(layout['rows']) == 2
  for box in layout['rows'] + layout['cols']:
    x0, y0, x1, y1 = box
    assert (drawn[y0:y1, x0:x1] < 100).any()  # a label is drawn there
  # Row 0 holds the content reconstructions (members 0-4), row 1 the style
  # reconstructions (members 5-9), each member in its cell.
  for (r, c), (x0, y0, x1, y1) in layout['cells'].items():
    member = _png(tmp_path / f'members/{5 * r + c:04d}.png')
    h, w = member.shape[:2]
    top, left = (y1 - y0 - h) // 2, (x1 - x0 - w) // 2
    np.testing.assert_array_equal(
        drawn[y0 + top:y0 + top + h, x0 + left:x0 + left + w], member)
  # The members ran what the paper's Figure 1 asks for.
  first = json.loads((tmp_path / 'members/0002.json').read_text())
  last = json.loads((tmp_path / 'members/0009.json').read_text())
  assert first['content_layers'] == ['relu3_1']
  assert (first['content_weight'], first['style_weight']) == (1.0, 0.0)
  assert last['style_layers'] == list(layers)
  assert (last['content_weight'], last['style_weight']) == (0.0, 1.0)
  assert last['weights'] == 'random' and last['pooling'] == 'avg'


def test_missing_content_image_is_a_user_error(tmp_path, capsys):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'figure2.py'),
       f'--images={tmp_path / "none"}', f'--workdir={tmp_path / "w"}'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert 'tubingen.jpg' in result.stderr and 'does not exist' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'w').exists()
