"""A config is checked and resolved once: the engine runs typed, frozen
members and never reads a ConfigDict again."""
import copy
import dataclasses
import pickle

import numpy as np
import pytest

from helpers import tiny_config, tiny_sweep
from nst import engine, optim, spec, sweep, targets


class _Untouchable:
  """Stands in for a member's ConfigDict: any read fails the test."""

  def __getattr__(self, name):
    raise AssertionError(f'the engine read config.{name}')

  def __getitem__(self, name):
    raise AssertionError(f'the engine read config[{name!r}]')


class _Images(engine.Callbacks):
  def __init__(self):
    self.images = {}

  def image(self, member, image):
    self.images[member.index] = image


def _run(members, loader):
  kept = _Images()
  results = engine.run(sweep.group(members), loader=loader, callbacks=kept)
  return kept.images, [r.metrics['loss'] for r in results]


def test_the_engine_reads_resolved_members_not_their_configs():
  config = tiny_sweep(num_steps=2)
  loader = engine.Loader()
  _, members = sweep.expand(config, loader.images_for)
  images, losses = _run(members, loader)
  # The same members with their ConfigDicts made unreadable run alike.
  blind = [dataclasses.replace(m) for m in members]
  for m, b in zip(members, blind):
    b.settings, b.hparams = m.settings, m.hparams
    b.largest_side = m.largest_side
    b.config = _Untouchable()
  blind_images, blind_losses = _run(blind, loader)
  assert blind_losses == losses
  for index, image in images.items():
    np.testing.assert_array_equal(blind_images[index], image)


def test_a_members_settings_are_frozen_at_resolve():
  config = tiny_config(style_weight=3.0)
  member = spec.resolve(config, targets.image_loader(config))
  config.style_weight = 9.0  # after resolving: the member keeps its value
  config.style_layers = ('relu1_1',)
  assert member.settings.style_weight == 3.0
  assert member.settings['style_weight'] == 3.0
  assert member.settings.style_layers == tiny_config().style_layers
  assert isinstance(member.settings.scales, tuple)
  with pytest.raises(AttributeError, match='frozen'):
    member.settings.style_weight = 1.0
  with pytest.raises(AttributeError):
    member.settings.no_such_field  # pylint: disable=pointless-statement
  expected = optim.hyperparams(tiny_config(style_weight=3.0))
  assert member.hparams == expected
  # Copied and pickled whole (a Result carries its member).
  for twin in (copy.deepcopy(member.settings),
               pickle.loads(pickle.dumps(member.settings))):
    assert dict(twin) == dict(member.settings)
    with pytest.raises(AttributeError, match='frozen'):
      twin.seed = 1
