"""scripts/evaluate.py: the measure on hand-computed features, and end to
end with a random VGG on tiny images."""
import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst import images

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'evaluate.py'
spec = importlib.util.spec_from_file_location('evaluate', SCRIPT)
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)


def test_errors_by_hand():
  # relu4_2: content [[1, 0], [0, 1]], output [[1, 0], [0, 2]]: the
  # difference has norm 1, the content sqrt(2).
  content = {'relu4_2': jnp.array([[[1., 0.]], [[0., 1.]]])}
  out = {'relu4_2': jnp.array([[[1., 0.]], [[0., 2.]]])}
  # Each style layer: the output's features are c times the style's, so its
  # Gram matrix is c^2 times theirs and the relative error c^2 - 1.
  style_feats = jnp.array([[[1., 2.], [3., 1.]], [[0., 1.], [2., 2.]]])
  squares = (1.1, 1.2, 1.3, 1.4, 1.5)
  grams = {l: evaluate.gram_per_position(style_feats)
           for l in evaluate.STYLE_LAYERS}
  for l, c2 in zip(evaluate.STYLE_LAYERS, squares):
    out[l] = np.sqrt(c2) * style_feats
  # G per position: F^T F / (H W) by hand for the first layer.
  f = np.asarray(style_feats).reshape(4, 2)
  np.testing.assert_allclose(grams['relu1_1'], f.T @ f / 4, rtol=1e-6)
  row = evaluate.errors(out, content, grams)
  np.testing.assert_allclose(row['content'], 1 / np.sqrt(2), rtol=1e-6)
  for l, c2 in zip(evaluate.STYLE_LAYERS, squares):
    np.testing.assert_allclose(row[l], c2 - 1, rtol=1e-5)
  np.testing.assert_allclose(row['style'], 0.3, rtol=1e-5)


def test_copy_score_by_hand():
  # Style positions (after the ring is left out): e1, e2 and (1, 1, 0).
  style = jnp.array([[[1., 0., 0.], [0., 1., 0.], [1., 1., 0.]]])
  # Output: 2 x 2 positions; (1, 0) repeats (3, 3, 0) = 3 (1, 1, 0): a
  # copy, cosine 1 whatever its length; (0, 1) is all zeros: similar to
  # nothing; (0, 0) is (1, 0, 1): cos 1/sqrt(2) to e1; (1, 1) is (0, 2, 1):
  # cos 2/sqrt(5) to e2.
  out = jnp.array([[[1., 0., 1.], [0., 0., 0.]],
                   [[3., 3., 0.], [0., 2., 1.]]])
  sim = np.asarray(evaluate.copy_similarity(out, style))
  np.testing.assert_allclose(
      sim, [[1 / np.sqrt(2), 0.0], [1.0, 2 / np.sqrt(5)]], rtol=1e-6)
  score, row, col = evaluate.copy_score(out, style)
  np.testing.assert_allclose(score, 1.0, rtol=1e-6)
  assert (row, col) == (1, 0)


def test_inner_leaves_out_the_ring():
  f = jnp.arange(5 * 4 * 2.0).reshape(5, 4, 2)
  np.testing.assert_array_equal(evaluate.inner(f), f[1:4, 1:3])


def _png(path, rgb):
  Image.fromarray(rgb).save(path)
  return str(path)


@pytest.mark.slow
def test_cli_scores_the_photo_and_the_painting_themselves(tmp_path):
  photo = _png(tmp_path / 'photo.png', images.resize(
      images.read_rgb('skimage:astronaut'), 48))
  painting = _png(tmp_path / 'painting.png', images.swirls(48))
  # A 96 px copy of the photo is read at 64 px like the photo itself.
  bigger = _png(tmp_path / 'bigger.png', images.resize(
      images.read_rgb('skimage:astronaut'), 96))
  table = tmp_path / 'scores.csv'
  result = subprocess.run(
      [sys.executable, str(SCRIPT), '--content', photo, '--style', painting,
       '--size', '64', '--weights', 'random', '--csv', str(table), photo,
       painting, bigger], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  rows = {r['output']: r for r in csv.DictReader(table.open())}
  assert float(rows[photo]['content']) == 0.0
  assert float(rows[painting]['style']) < 1e-5
  assert float(rows[painting]['content']) > 0.1
  assert float(rows[bigger]['content']) < 0.15
  photo_row = rows[evaluate.PHOTO]
  assert photo_row['style'] == rows[photo]['style']
  # The painting scored against itself is all copy; the photo is not.
  np.testing.assert_allclose(float(rows[painting]['copy']), 1.0, rtol=1e-5)
  assert float(rows[photo]['copy']) < 0.999
  assert photo_row['copy'] == rows[photo]['copy']
  # Where: the centre of a 16 px cell inside the ring, in the output's own
  # pixels (the 96 px copy's are twice the 48 px photo's, up to rounding).
  for name, side in ((painting, 48), (photo, 48), (bigger, 96)):
    for axis in ('copy_x', 'copy_y'):
      assert 0 < int(rows[name][axis]) < side
  assert float(photo_row['style']) > 0.1
  assert f'{float(rows[photo]["style"]):7.3f}' in result.stdout


@pytest.mark.slow
def test_cli_bad_path_is_one_line(tmp_path):
  painting = _png(tmp_path / 'painting.png', images.swirls(48))
  result = subprocess.run(
      [sys.executable, str(SCRIPT), '--content', str(tmp_path / 'nope.png'),
       '--style', painting, '--size', '48', '--weights', 'random',
       painting], capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().count('\n') == 0
  assert 'nope.png' in result.stderr and 'does not exist' in result.stderr


@pytest.mark.slow
def test_cli_size_too_small_for_the_copy_score_is_one_line(tmp_path):
  painting = _png(tmp_path / 'painting.png', images.swirls(48))
  result = subprocess.run(
      [sys.executable, str(SCRIPT), '--content', painting, '--style',
       painting, '--size', '32', '--weights', 'random', painting],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().count('\n') == 0
  assert '--size 32: accepted is at least 48 px' in result.stderr


def test_a_size_whose_forward_pass_cannot_fit_is_refused(capsys):
  from nst import memory
  if 'host' not in memory.available():
    pytest.skip('this host does not say how much memory is free')
  # 10^5 px square: every VGG-19 conv output to relu5_1 is about 11 TiB
  # (three sets: 32 TiB), and the copy score's cosines of 6248^2 inner
  # relu5_1 positions against as many 5.4 PiB.
  assert evaluate.main(['--content', 'nst:swirls', '--style', 'nst:swirls',
                        '--size', '100000', 'nst:swirls']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: measuring at --size 100000 needs about '
                        '5.4 PiB of memory, more than the ')
  assert err.endswith('choose a smaller --size (the measure is defined at '
                      '512)\n')


def test_csv_naming_a_scored_image_is_refused_and_the_image_kept(tmp_path,
                                                                 capsys):
  painting = _png(tmp_path / 'painting.png', images.swirls(48))
  before = Path(painting).read_bytes()
  assert evaluate.main(['--content', painting, '--style', 'nst:swirls',
                        '--size', '48', '--weights', 'random',
                        '--csv', painting, painting]) == 2
  assert "is one of the images it would score" in capsys.readouterr().err
  assert Path(painting).read_bytes() == before


def test_a_missing_output_is_named_before_any_features_are_computed(
    monkeypatch, capsys):
  def never(*args, **kwargs):
    raise AssertionError('features were computed first')
  monkeypatch.setattr(evaluate, 'Evaluator', never)
  assert evaluate.main(['--content', 'nst:swirls', '--style', 'nst:swirls',
                        '--weights', 'random', 'nst:swirls',
                        '/nonexistent/out.png']) == 2
  assert capsys.readouterr().err.startswith(
      "error: image '/nonexistent/out.png' does not exist; accepted: ")
