"""The style controls, each checked with numbers: blend weights, style
scale, colour preservation, multi-scale, iterate averaging, masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import random_vgg19, run_one, tiny_config
from nst import colour, images, losses, optim, spec, vgg
from nst import targets as nst_targets
from nst import step as nst_step

PARAMS = random_vgg19()
TWO_STYLES = 'nst:swirls,skimage:coffee'


def _run(**overrides):
  return run_one(tiny_config(log_every=0, **overrides), PARAMS)[0]


def _targets(config):
  model = vgg.VGG(network=config.network, pooling=config.pooling)
  inputs = nst_targets.load_inputs(config, config.image_size)
  return nst_targets.make_targets(config, model, PARAMS, inputs)


def test_trimmed_style_targets_are_the_typical_positions_moments():
  config = tiny_config(image_size=64, style_layer_trims=(0.0,) * 4 + (0.25,))
  model = vgg.VGG(network=config.network, pooling=config.pooling)
  inputs = nst_targets.load_inputs(config, config.image_size)
  trimmed = nst_targets.make_targets(config, model, PARAMS, inputs).terms['style']['targets']
  config.style_layer_trims = ()
  whole = nst_targets.make_targets(config, model, PARAMS, inputs).terms['style']['targets']
  feats = nst_targets.features(model, PARAMS, jnp.asarray(inputs.styles[0]),
                                ('relu5_1',))['relu5_1']
  # Jitted: op by op, each operation would compile on its own.
  mask = jax.jit(losses.typical_mask, static_argnums=1)(feats, 0.25)
  assert 0 < float(mask.sum()) < mask.size
  expected = jax.jit(lambda f, m: losses.style_target(
      *losses.moments(f, m), 'gram', 'relative'))(feats, mask)
  np.testing.assert_allclose(trimmed['relu5_1']['srm'], expected['srm'],
                             rtol=1e-5)
  assert not np.allclose(trimmed['relu5_1']['srm'], whole['relu5_1']['srm'])
  np.testing.assert_array_equal(trimmed['relu4_1']['srm'],
                                whole['relu4_1']['srm'])


def _mask(tmp_path, name, value):
  """A 32x32 mask file: ``value`` a constant, or 'left' (left half white)."""
  grey = np.zeros((32, 32), np.uint8)
  if value == 'left':
    grey[:, :16] = 255
  else:
    grey[:] = value
  path = tmp_path / f'{name}.png'
  Image.fromarray(grey).save(path)
  return str(path)


@pytest.mark.slow
def test_blend_targets_are_weighted_moments_and_1_0_is_the_first_style():
  config = tiny_config(style_image=TWO_STYLES, style_blend_weights=(1., 3.))
  blended = _targets(config).terms['style']['targets']
  one, two = (_targets(tiny_config(style_image=s)).terms['style']['targets']
              for s in TWO_STYLES.split(','))
  for l in config.style_layers:
    np.testing.assert_allclose(blended[l]['srm'],
                               0.25 * one[l]['srm'] + 0.75 * two[l]['srm'],
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      _run(style_image=TWO_STYLES, style_blend_weights=(1., 0.)),
      _run(style_image='nst:swirls'))


def test_style_scale_reads_the_style_at_that_fraction_of_the_size():
  config = tiny_config(image_size=64, style_scale=0.5,
                       style_layers=('conv1_1', 'conv2_1'),
                       style_layer_weights=())
  inputs = nst_targets.load_inputs(config, 64)
  assert inputs.styles[0].shape == (32, 32, 3)   # swirls is square
  assert inputs.content.shape == (64, 64, 3)
  got = _targets(config).terms['style']['targets']
  # As resizing predicts: the moments of the style's features at 32 px.
  model = vgg.VGG(network='vgg19')
  half = model.apply(PARAMS, images.load('nst:swirls', 32)[None],
                     ('conv1_1', 'conv2_1'))
  full = _targets(tiny_config(image_size=64, style_layers=('conv1_1',
                                                           'conv2_1'),
                              style_layer_weights=())).terms['style']['targets']
  for l in ('conv1_1', 'conv2_1'):
    assert half[l].shape[1:3] == {'conv1_1': (32, 32), 'conv2_1': (16, 16)}[l]
    np.testing.assert_allclose(got[l]['srm'], losses.moments(half[l][0])[1],
                               rtol=1e-5, atol=1e-3)
    # ... which is not the full-size style's.
    change = np.abs(got[l]['srm'] - full[l]['srm']).max()
    assert change > 0.05 * np.abs(full[l]['srm']).max()


def test_luminance_only_keeps_the_content_chrominance():
  config = tiny_config(preserve_colour='luminance', num_steps=5,
                       log_every=0)
  inputs = nst_targets.load_inputs(config, 32)
  # The network sees grey images; the style's luminance has the content's
  # mean and standard deviation.
  for x in [inputs.content] + inputs.styles:
    rgb = colour.to_rgb(x)
    assert np.abs(rgb - rgb[..., :1]).max() < 1e-5
  content_y = colour.yiq(inputs.original)[..., 0]
  style_y = colour.to_rgb(inputs.styles[0])[..., 0]
  np.testing.assert_allclose([style_y.mean(), style_y.std()],
                             [content_y.mean(), content_y.std()], rtol=1e-4)
  out = run_one(config, PARAMS)[0]
  want = colour.yiq(inputs.original)[..., 1:]
  # The float output carries the content's I and Q up to rounding ...
  assert np.abs(colour.yiq(out)[..., 1:] - want).max() < 1e-4
  # ... and the 8-bit image (clipped, rounded) within 1% of full scale.
  written = colour.yiq(images.preprocess(images.deprocess(out)))[..., 1:]
  assert np.abs(written - want).mean() < 0.01
  # Its luminance is the result's, not the content's.
  assert np.abs(colour.yiq(out)[..., 0] - content_y).mean() > 0.01


def test_histogram_matching_gives_the_style_the_content_mean_and_cov():
  content = images.load('skimage:astronaut', 48)
  style = images.load('nst:swirls', 40)
  matched = colour.match_colours(style, content)
  got = colour.to_rgb(matched).reshape(-1, 3)
  want = colour.to_rgb(content).reshape(-1, 3)
  np.testing.assert_allclose(got.mean(0), want.mean(0), atol=1e-5)
  np.testing.assert_allclose(np.cov(got, rowvar=False, bias=True),
                             np.cov(want, rowvar=False, bias=True), atol=1e-6)
  before = colour.to_rgb(style).reshape(-1, 3)
  assert np.abs(before.mean(0) - want.mean(0)).max() > 0.05
  config = tiny_config(preserve_colour='histogram')
  inputs = nst_targets.load_inputs(config, 32)
  np.testing.assert_allclose(
      colour.to_rgb(inputs.styles[0]).reshape(-1, 3).mean(0),
      colour.to_rgb(inputs.content).reshape(-1, 3).mean(0), atol=1e-5)


@pytest.mark.slow
def test_multiscale_runs_each_scale_at_its_size_from_the_last_output():
  seen, logged, saved = [], [], []

  def load(spec, size):
    seen.append((spec, size))
    return images.load(spec, size)

  config = tiny_config(image_size=48, scales=(16, 32), scale_steps=(2, 3),
                       num_steps=1, log_every=1, save_every=1)
  image, final = run_one(
      config, PARAMS, load=load, on_log=lambda i, m: logged.append(m),
      on_save=lambda i, x: saved.append((i, x.shape)))
  assert sorted({size for _, size in seen}) == [16, 32, 48]
  assert [(m['step'], m['size']) for m in logged] == [
      (0, 16), (1, 16), (2, 16), (3, 32), (4, 32), (5, 32), (6, 48)]
  assert [s for s in saved] == [(1, (16, 16, 3)), (2, (16, 16, 3)),
                                (3, (32, 32, 3)), (4, (32, 32, 3)),
                                (5, (32, 32, 3)), (6, (48, 48, 3))]
  assert final['step'] == 6 and image.shape == (48, 48, 3)
  # Zero steps at the last scale: the output is the previous scale's
  # output, resized, plus the photo's detail the coarse scale lacked
  # (init='content'); from noise, the resized output alone.
  for init in ('content', 'noise'):
    coarse = _run(image_size=16, num_steps=2, init=init)
    upsampled = _run(image_size=32, scales=(16,), scale_steps=(2,),
                     num_steps=0, init=init)
    want = nst_targets.resize_image(coarse, (32, 32, 3))
    if init == 'content':
      photo = images.load('skimage:astronaut', 32)
      want = want + photo - nst_targets.resize_image(
          images.load('skimage:astronaut', 16), (32, 32, 3))
    np.testing.assert_allclose(upsampled, want, atol=1e-3)


def test_averaging_equals_a_hand_computed_ema_over_3_steps():
  iterates = []
  run_one(tiny_config(num_steps=3, log_every=0, save_every=1),
                  PARAMS, on_save=lambda i, x: iterates.append(x))
  x1, x2, x3 = iterates
  d = 0.8
  ema = (1 - d) * (d * d * x1 + d * x2 + x3) / (1 - d ** 3)
  averaged = _run(num_steps=3, avg_decay=d)
  np.testing.assert_allclose(averaged, ema, rtol=1e-5, atol=1e-3)
  assert np.abs(averaged - x3).max() > 1.0  # not the last iterate
  # The bias correction at each step, on the optimiser's own functions.
  avg = optim.average_init(jnp.zeros(2))
  for k, x in enumerate([1.0, 2.0, 4.0], 1):
    avg = optim.average_update(avg, jnp.full(2, x), d)
  np.testing.assert_allclose(
      optim.averaged(avg, d, jnp.zeros(2)),
      (1 - d) * (d * d * 1 + d * 2 + 4) / (1 - d ** 3), rtol=1e-6)


@pytest.mark.slow
def test_an_all_zero_mask_is_the_same_as_leaving_that_style_out(tmp_path):
  left = _mask(tmp_path, 'left', 'left')
  zeros = _mask(tmp_path, 'zeros', 0)
  with_zeros = tiny_config(style_image=TWO_STYLES,
                           style_masks=f'{left},{zeros}')
  without = tiny_config(style_image='nst:swirls', style_masks=left)
  # The same objective and gradient ...
  model = vgg.VGG(network='vgg19')
  x = jnp.asarray(images.load('skimage:astronaut', 32)) + 20 * jax.random.normal(
      jax.random.key(0), (32, 32, 3))
  value_and_grad = lambda c: jax.value_and_grad(
      lambda x: nst_step.objective(model, PARAMS, _targets(c), x)[0])(x)
  (v1, g1), (v2, g2) = value_and_grad(with_zeros), value_and_grad(without)
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5 * np.abs(g2).max())
  # ... so the same image, up to float rounding carried through Adam.
  both = run_one(with_zeros, PARAMS)[0]
  alone = run_one(without, PARAMS)[0]
  np.testing.assert_allclose(both, alone, rtol=1e-5, atol=0.05)
  # A mask of ones is no mask; masks steer where each style goes.
  ones = _mask(tmp_path, 'ones', 255)
  plain = _run()
  np.testing.assert_allclose(_run(style_masks=ones), plain, rtol=1e-5,
                             atol=1e-2)
  assert np.abs(alone - plain).max() > 1.0


def test_masked_targets_downsample_masks_to_each_layer(tmp_path):
  left = _mask(tmp_path, 'left', 'left')
  zeros = _mask(tmp_path, 'zeros', 0)
  config = tiny_config(style_image=TWO_STYLES, style_masks=f'{left},{zeros}',
                       style_blend_weights=(2.0, 3.0))
  targets = _targets(config)
  masks = targets.terms['style']['masks']
  assert masks['relu1_1'].shape == (2, 32, 32)
  assert masks['relu3_1'].shape == (2, 8, 8)
  np.testing.assert_allclose(masks['relu3_1'][0, :, :4], 1.0, atol=1e-6)
  np.testing.assert_allclose(masks['relu3_1'][0, :, 4:], 0.0, atol=1e-6)
  np.testing.assert_allclose(targets.terms['style']['region_weights'], [2.0, 0.0])
  assert targets.terms['style']['targets']['relu3_1']['srm'].shape == (2, 256, 256)


@pytest.mark.slow
def test_mean_cov_style_loss_is_optimised():
  logged = []
  run_one(tiny_config(style_loss='mean_cov', num_steps=30,
                              init='noise', init_noise_std=30.0,
                              learning_rate=10.0, log_every=0),
                  PARAMS, on_log=lambda i, m: logged.append(m))
  # Measured: 9.7x lower after 30 steps (random weights, 32 px).
  assert logged[-1]['style'] < logged[0]['style'] / 4


@pytest.mark.parametrize('overrides,message', [
    ({'style_image': 'nst:swirls,'}, 'has an empty entry'),
    ({'style_blend_weights': (1.0, 2.0)}, '2 values for 1 style images'),
    ({'style_image': TWO_STYLES, 'style_blend_weights': (0.0, 0.0)},
     r'sum > 0'),
    ({'style_masks': 'a.png,b.png'}, r'2 mask\(s\) for 1 style'),
    ({'style_masks': 'a.png', 'style_layers': (), 'style_layer_weights': ()},
     'with no style_layers'),
    ({'style_scale': 0.0}, r'style_scale=0.0'),
    ({'preserve_colour': 'yes'}, r"preserve_colour='yes'; accepted: none, "
                                 'luminance, histogram'),
    ({'style_loss': 'w2'},
     r"style_loss='w2'; accepted: gram, mean_cov, mean"),
    ({'style_layer_losses': ('gram',)},
     r'names 5 layer\(s\) but style_layer_losses has 1 values'),
    ({'style_layer_losses': ('gram',) * 4 + ('w2',)},
     r"style_layer_losses=\(.*'w2'\) has 'w2'; accepted: gram, mean_cov, mean"),
    ({'style_layer_trims': (0.1,)},
     r'names 5 layer\(s\) but style_layer_trims has 1 values'),
    ({'style_layer_trims': (0.0, 0.0, 0.0, 0.1, 1.0)},
     r'style_layer_trims=.*: each must be a number in \[0, 1\)'),
    ({'avg_decay': 1.0}, r'avg_decay=1.0: accepted is a number in \[0, 1\)'),
    ({'scales': (64,)}, r'scales=\(64,\)'),
    ({'scales': (24, 16)}, 'increasing'),
    ({'scales': (8,)}, r'scales=\(8,\).* from 16'),
    ({'scales': (16, 24), 'scale_steps': (5,)}, r'scale_steps=\(5,\)'),
    ({'style_weight': 1e300}, r'style_weight=1e\+300: accepted is a finite '
     r'number >= 0 and at most 3.4e\+38 \(float32\)'),
    ({'style_layer_weights': (1.0, 1.0, 1.0, 1.0, 1e39)},
     r'style_layer_weights .* at most 3.4e\+38'),
    ({'seed': 10**20}, r'seed=100000000000000000000: accepted is a whole '
     r'number from -9223372036854775808 to 9223372036854775807'),
])
def test_bad_control_values_are_named(overrides, message):
  from nst.errors import UserError
  with pytest.raises(UserError, match=message):
    spec.check(tiny_config(**overrides))


def test_one_scale_needs_no_scale_steps():
  # scales=() leaves the default's scale_steps nothing to count.
  config = tiny_config(scales=(), scale_steps=(150, 150))
  spec.check(config)
  assert spec.scale_plan(config) == [(32, 2)]


def test_too_thin_a_photo_names_the_size_that_works():
  from nst.errors import UserError
  config = tiny_config(image_size=256, scales=())
  with pytest.raises(UserError, match=r'content image is 256x8 px; .* '
                     r'at least 16 px: raise image_size \(to 512 or more\)'):
    spec.check_content_shape(config, (8, 256, 3), 256)


def test_too_small_a_style_scale_is_a_user_error():
  from nst.errors import UserError
  with pytest.raises(UserError, match=r'style_scale=0.25 .* is 8x8 px'):
    nst_targets.load_inputs(tiny_config(style_scale=0.25), 32)


@pytest.mark.slow
def test_mean_cov_gradient_is_finite_on_a_real_layer():
  model = vgg.VGG(network='vgg19')
  config = tiny_config(style_loss='mean_cov')
  targets = _targets(config)
  x = jnp.asarray(images.load('skimage:astronaut', 32))
  grad = jax.grad(lambda x: nst_step.objective(model, PARAMS, targets,
                                              x)[0])(x)
  assert bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).max()) > 0


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', ['lbfgs', 'lbfgs_zoom', 'adam'])
def test_zero_gradient_siblings_finish_as_converged(tmp_path, optimizer):
  # A mask that covers nothing (no style anywhere) from the content photo,
  # and every weight 0: the gradient is exactly zero at the start.
  black = _mask(tmp_path, 'black', 0)
  for overrides in ({'style_masks': black}, {'content_weight': 0.0,
                                             'style_weight': 0.0}):
    config = tiny_config(optimizer=optimizer, num_steps=3, **overrides)
    out, metrics = run_one(config, random_vgg19())
    assert np.isfinite(out).all() and np.isfinite(metrics['loss'])
    start = images.load(config.content_image, 32)
    np.testing.assert_allclose(out, start, atol=1e-3)
