"""A new term of the objective is an entry of ``nst.losses.TERMS`` and a
weight field in the config: shown here with a colour-mean term added from
this module alone, run end to end by the unchanged engine."""
import json

import jax.numpy as jnp
import pytest

from helpers import tiny_config
from nst import images, losses, runner


def _mean_colour_target(config, context):
  """The content photo's mean colour (Caffe convention), per channel."""
  return {'mean': jnp.mean(jnp.asarray(context.inputs.content), axis=(0, 1))}


def _mean_colour_loss(feats, image, target):
  """Squared distance of the image's mean colour from the photo's."""
  return jnp.sum((jnp.mean(image, axis=(0, 1)) - target['mean']) ** 2)


@pytest.fixture
def colour_term(monkeypatch):
  terms = dict(losses.TERMS)
  terms['colour'] = losses.Term('colour_weight', _mean_colour_loss,
                                _mean_colour_target)
  monkeypatch.setattr(losses, 'TERMS', terms)


def _config(weight):
  config = tiny_config(num_steps=8, optimizer='adam', learning_rate=8.0,
                       log_every=1)
  config.colour_weight = weight
  return config


def _rows(path):
  return [json.loads(l) for l in (path / 'metrics.jsonl').read_text()
          .splitlines()]


def test_a_term_added_to_the_table_is_optimised_logged_and_reported(
    tmp_path, colour_term):
  off, on = tmp_path / 'off', tmp_path / 'on'
  runner.run(_config(0.0), off)
  runner.run(_config(1.0), on)
  rows_off, rows_on = _rows(off), _rows(on)
  # The term's value is in every metrics row; its weight decides the total.
  for row in rows_off + rows_on:
    assert set(row) >= {'content', 'style', 'tv', 'colour'}
  assert rows_off[0]['colour'] == pytest.approx(0.0, abs=1e-6)
  for row in rows_on:
    assert row['loss'] == pytest.approx(
        row['content'] + 2.5 * row['style'] + row['colour'], rel=1e-4)
  # Weighted, the step keeps the mean colour closer to the photo's.
  assert rows_on[-1]['colour'] < 0.5 * rows_off[-1]['colour']
  assert rows_off[-1]['colour'] > 1.0
  assert images.read_rgb(str(on / 'final.png')).shape == (32, 32, 3)
  # The page charts it like the built-in terms.
  assert 'data-series="colour"' in (on / 'report.html').read_text()


def test_a_term_weight_out_of_range_is_refused(tmp_path, colour_term):
  from nst.errors import UserError
  with pytest.raises(UserError, match=r'colour_weight=-1.0: accepted is a '
                     'finite number >= 0'):
    runner.run(_config(-1.0), tmp_path / 'o')
