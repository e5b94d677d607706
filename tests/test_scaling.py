"""loss_scaling: 'relative' weights mean the same at every size; 'paper'
keeps the paper's formulas (random VGG, 64 and 128 px)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_vgg19, run_one, tiny_config
from nst import images, losses, spec, vgg
from nst.errors import UserError
from nst import targets as nst_targets
from nst import step as nst_step

PARAMS = random_vgg19()
STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
# One picture (half the photo, half the swirls, 512 px) shown at each size.
BLEND = (0.5 * images.read_rgb('skimage:astronaut').astype(np.float32) +
         0.5 * images.swirls(512)).astype(np.uint8)


def _terms(scaling, size):
  """alpha * L_content and beta * L_style of BLEND at ``size`` px."""
  config = tiny_config(loss_scaling=scaling, image_size=size,
                       content_layers=('relu4_2',), style_layers=STYLE_LAYERS,
                       style_layer_weights=(), style_image='nst:swirls',
                       content_weight=1.0, style_weight=3.0)
  model = vgg.VGG()
  targets = nst_targets.make_targets(config, model, PARAMS,
                                 nst_targets.load_inputs(config, size))
  x = jnp.asarray(images.preprocess(images.resize(BLEND, size)))
  _, parts = nst_step.objective(model, PARAMS, targets, x)
  return (float(targets.weights['content'] * parts['content']),
          float(targets.weights['style'] * parts['style']))


@pytest.mark.slow
def test_relative_terms_keep_their_ratio_across_sizes():
  # The same picture at 64 and 128 px is not the same array (resampled), so
  # its features differ somewhat: measured 0.199 and 0.155 for the content /
  # style ratio (1.29x). 'paper' moves it 2.2x (the content term grows with the
  # pixel count, the style term does not), so the tolerance of 1.33x tells
  # the two apart.
  (c64, s64), (c128, s128) = _terms('relative', 64), _terms('relative', 128)
  assert 0.75 < (c64 / s64) / (c128 / s128) < 1.33
  # Each term is a relative error too: the same order at both sizes.
  assert 0.75 < c64 / c128 < 1.33 and 0.75 < s64 / s128 < 1.33
  (p64, q64), (p128, q128) = _terms('paper', 64), _terms('paper', 128)
  assert (p128 / q128) / (p64 / q64) > 2.0


def test_relative_alpha_is_not_rescaled_at_coarse_scales():
  model = vgg.VGG(network='vgg19')
  for scaling, factor in (('relative', 1.0), ('paper', 4.0)):
    config = tiny_config(image_size=32, loss_scaling=scaling)
    inputs = nst_targets.load_inputs(config, 16)
    coarse = nst_targets.make_targets(config, model, PARAMS, inputs,
                                  area_ratio=(32 / 16) ** 2)
    assert float(coarse.weights['content']) == factor * config.content_weight
    assert float(coarse.weights['style']) == config.style_weight


def test_relative_content_term_of_the_photo_and_of_black():
  # From the photo itself the content term is 0; features that are all zero
  # score 1 at every size (the definition of the scale, checked on the
  # targets make_targets builds).
  model = vgg.VGG()
  for size in (32, 64):
    config = tiny_config(image_size=size, content_layers=('relu4_2',),
                         style_layers=(), style_layer_weights=())
    inputs = nst_targets.load_inputs(config, size)
    targets = nst_targets.make_targets(config, model, PARAMS, inputs)
    own = nst_step.objective(model, PARAMS, targets,
                            jnp.asarray(inputs.content))[1]
    assert float(own['content']) == 0.0
    feats = nst_targets.features(model, PARAMS, jnp.asarray(inputs.content),
                              ('relu4_2',))['relu4_2']
    zero = losses.content_scale(feats, 'relative') * \
        losses.layer_content_loss(jnp.zeros_like(feats), feats)
    np.testing.assert_allclose(zero, 1.0, rtol=1e-5)


@pytest.mark.parametrize('image_size, scales, plan', [
    (64, (0.25, 0.5), [(16, 3), (32, 4), (64, 2)]),
    # 12 px is below relu5_1's 16: that scale is left out with its steps.
    (48, (0.25, 0.5), [(24, 4), (48, 2)]),
    (64, (16, 0.5), [(16, 3), (32, 4), (64, 2)]),
])
def test_fractional_scales_follow_image_size(image_size, scales, plan):
  config = tiny_config(image_size=image_size, scales=scales,
                       scale_steps=(3, 4), num_steps=2)
  spec.check(config)
  assert spec.scale_plan(config) == plan


@pytest.mark.parametrize('scales', [(0.5, 0.25), (1.5,), (0.0,), (True,),
                                    (0.5, 32), (8,)])
def test_bad_fractional_scales_are_named(scales):
  from nst.errors import UserError
  with pytest.raises(UserError, match=r'scales=.*fraction of image_size'):
    spec.check(tiny_config(image_size=64, scales=scales,
                                     scale_steps=()))


@pytest.mark.slow
@pytest.mark.parametrize('scaling, beta', [('relative', 100.0),
                                           ('paper', 1e3)])
def test_lbfgs_range_penalty_keeps_pixels_in_range(scaling, beta):
  # The penalty's weight is a blank image's content loss per value: the
  # sum of the content weights (relative) or of 1/2 |P|^2 (paper) over the
  # number of values ...
  config = tiny_config(optimizer='lbfgs', loss_scaling=scaling,
                       style_weight=beta, num_steps=30, log_every=0)
  inputs = nst_targets.load_inputs(config, 32)
  targets = nst_targets.make_targets(config, vgg.VGG(), PARAMS, inputs)
  photo = targets.terms['content']['features']['relu4_2']
  blank = 1.0 if scaling == 'relative' else 0.5 * float(jnp.sum(photo ** 2))
  np.testing.assert_allclose(targets.range_scale,
                             blank / inputs.content.size, rtol=1e-5)
  # ... which holds L-BFGS's pixels near the range in either scaling, where
  # unconstrained they overshoot by grey levels. Measured RMS overshoot with
  # / without: 0.050 / 3.0 (relative), 0.17 / 3.2 (paper).
  lo, hi = images.pixel_bounds()
  rms = {}
  for clip in (True, False):
    image = run_one(tiny_config(**{**config, 'clip_pixels': clip}),
                            PARAMS)[0]
    over = np.maximum(image - hi, 0) + np.maximum(lo - image, 0)
    rms[clip] = float(np.sqrt(np.mean(over ** 2)))
  assert rms[False] > 1.0 and rms[True] < 0.2 * rms[False], rms


def test_a_fraction_too_small_for_a_wide_image_is_left_out(tmp_path):
  from PIL import Image
  from helpers import program_of
  wide = tmp_path / 'wide.png'
  Image.new('RGB', (200, 60), (90, 120, 150)).save(wide)
  # The layers need 16 px. At 0.25 of 128 px the image is 32x10 px: left
  # out with its steps; at 0.5 it is 64x19 and runs; then 128x38.
  config = tiny_config(content_image=str(wide), image_size=128,
                       scales=(0.25, 0.5), scale_steps=(3, 4))
  plan = program_of(config).plan
  assert [(shape[:2], n) for shape, n in plan] == [((19, 64), 4),
                                                   ((38, 128), 2)]
  # An explicit size in px is never left out: too small is an error.
  with pytest.raises(UserError, match='coarse scale of 32 px'):
    program_of(tiny_config(content_image=str(wide), image_size=128,
                           scales=(32, 64), scale_steps=(3, 4)))


def test_coarse_scales_below_min_scale_size_give_their_steps_to_the_next():
  from configs import default
  config = default.get_config()
  # The default at 256 px: 64 px (a quarter) is below 128 px; its 150 steps
  # run at 128 px. At 512 px every scale runs; at 128 px only the last.
  assert spec.scale_plan(config) == [(128, 300), (256, 70)]
  config.image_size = 512
  assert spec.scale_plan(config) == [(128, 150), (256, 150), (512, 70)]
  config.image_size = 128
  assert spec.scale_plan(config) == [(128, 370)]
  config.image_size, config.min_scale_size = 256, 0
  assert spec.scale_plan(config) == [(64, 150), (128, 150), (256, 70)]
  # A size given in px is the user's explicit choice: run.
  config.min_scale_size, config.scales = 128, (64, 0.25)
  assert spec.scale_plan(config) == [(64, 150), (256, 220)]
  config.scales = (64, 0.5)
  assert spec.scale_plan(config) == [(64, 150), (128, 150), (256, 70)]
  spec.check(config)
  # Out of order is refused, whether or not the smaller one runs.
  config.scales = (0.5, 0.25)
  with pytest.raises(UserError, match=r'scales=\(0.5, 0.25\): .*increasing'):
    spec.check(config)
  config.scales = (0.25, 0.5)
  # Below the layers' minimum (16 px here) and min_scale_size 8: left out
  # with its steps (0.25 of 48 px is 12 px); 24 px runs.
  config.image_size, config.min_scale_size = 48, 8
  assert spec.scale_plan(config) == [(24, 150), (48, 70)]
  spec.check(config)
  config.min_scale_size = -1
  with pytest.raises(UserError, match=r'min_scale_size=-1: .*whole number'):
    spec.check(config)


def test_a_chunks_speed_leaves_out_each_scales_start(monkeypatch):
  """steps/s of a result (results.csv, bench_sweep's steady rate) counts
  stepping only: a finer scale's start (its targets and compiling, here a
  clock that jumps 100 s) and first step are left out, as the first
  scale's are."""
  from nst import engine
  real, jump = engine.time.perf_counter, [0.0]
  monkeypatch.setattr(engine.time, 'perf_counter', lambda: real() + jump[0])
  start_scale = engine._start_scale

  def slow_start(group, chunk, scale, shape):
    jump[0] += 100.0 * (scale == 1)
    return start_scale(group, chunk, scale, shape)
  monkeypatch.setattr(engine, '_start_scale', slow_start)
  config = tiny_config(scales=(16,), scale_steps=(4,), num_steps=4,
                       log_every=0)
  loader = engine.Loader()
  loader.params = lambda *_: PARAMS
  member = spec.resolve(config, loader.images_for(config))
  [result] = engine.run([[member]], loader=loader,
                        devices=jax.devices()[:1])
  assert jump[0] == 100.0 and result.status == 'ok'
  assert result.wall_s > 100.0  # the wall time keeps it
  # 3 steps after each scale's first; the jump alone would make it 0.06/s.
  assert 6 / result.steps_per_s < 50.0, result.steps_per_s
