"""Winograd F(4x4, 3x3) convolutions against the direct ones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst import (engine, memory, optim, sharding, spec, step, targets, vgg,
                 winograd)
from nst.errors import UserError
from helpers import program_of, random_vgg19, tiny_config


@pytest.mark.parametrize('shape', [(2, 7, 13, 5), (1, 8, 8, 3), (1, 1, 1, 2),
                                   (1, 9, 2, 4), (3, 4, 5, 1)])
def test_equals_the_direct_convolution(shape):
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, shape[-1], 6)), jnp.float32)
  direct = vgg.conv(x, k)
  got = jax.jit(winograd.conv3x3)(x, winograd.transform(k))
  assert got.shape == direct.shape
  np.testing.assert_allclose(got, direct, rtol=0,
                             atol=2e-5 * float(jnp.max(jnp.abs(direct))))


def test_box_filter_by_hand():
  # A 3x3 box filter on ones, zero-padded: 4 at the corners, 6 on the
  # edges, 9 inside; a second channel scaled by 2 adds twice as much.
  x = jnp.ones((1, 6, 7, 2)).at[..., 1].set(2.0)
  k = jnp.ones((3, 3, 2, 1))
  y = np.asarray(jax.jit(winograd.conv3x3)(x, winograd.transform(k)))[0, ..., 0]
  want = np.full((6, 7), 9.0)
  want[[0, -1], :] = 6
  want[:, [0, -1]] = 6
  want[[0, 0, -1, -1], [0, -1, 0, -1]] = 4
  np.testing.assert_allclose(y, 3 * want, rtol=1e-6)


@pytest.mark.slow
def test_vgg_outputs_and_gradients_match_the_direct_path():
  x = 50 * jax.random.normal(jax.random.key(5), (1, 12, 20, 3))
  layers = ('conv1_1', 'conv3_1', 'relu3_3')
  params = vgg.VGG().init(jax.random.key(0), x, layers)
  prepared = vgg.prepare(params, 'winograd', layers=layers)
  # conv3_1 to conv3_3 have 256 output channels (at 3x5 px); nothing after.
  assert sorted(prepared['winograd']) == ['conv3_1', 'conv3_2', 'conv3_3']

  def loss(variables, x):
    out = vgg.VGG().apply(variables, x, layers)
    return sum(jnp.sum(jnp.sin(v / 100)) for v in out.values())

  apply = jax.jit(lambda v, x: vgg.VGG().apply(v, x, layers))
  out_w, out_d = apply(prepared, x), apply(params, x)
  for name in layers:
    scale = float(jnp.max(jnp.abs(out_d[name])))
    np.testing.assert_allclose(out_w[name], out_d[name], rtol=0,
                               atol=1e-5 * scale)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  dv_w, dx_w = grad(prepared, x)
  dv_d, dx_d = grad(params, x)
  np.testing.assert_allclose(dx_w, dx_d, rtol=0,
                             atol=1e-4 * float(jnp.max(jnp.abs(dx_d))))
  for name in ('conv1_1', 'conv3_1', 'conv3_3'):
    a, b = dv_w['params'][name]['kernel'], dv_d['params'][name]['kernel']
    np.testing.assert_allclose(a, b, rtol=0,
                               atol=1e-4 * float(jnp.max(jnp.abs(b))))
  # The compiled input gradient: a direct convolution forward and backward
  # for each of the four other layers, none for the Winograd ones.
  hlo = jax.jit(jax.grad(loss, argnums=1)).lower(prepared, x).compile()
  assert hlo.as_text().count(' convolution(') == 2 * 4


def test_auto_leaves_small_layers_direct():
  # conv3_2 reads 256 channels: at 64 px it is 16x16x256 = 65536 values,
  # below AUTO_WINOGRAD_MIN_SIZE (131072); at 96 px, 24x24x256 = 147456.
  # conv3_1 reads 128 channels: below it at both sizes (24x24x128).
  layers = ('conv3_2',)
  params = vgg.VGG().init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                          layers)
  prepared = vgg.prepare(params, 'winograd', layers=layers)
  model = vgg.VGG(winograd_min_size=vgg.AUTO_WINOGRAD_MIN_SIZE)

  def convolutions(size):
    x = jnp.zeros((2, size, size, 3))
    hlo = jax.jit(lambda v, x: model.apply(v, x, layers)).lower(
        prepared, x).compile().as_text()
    return hlo.count(' convolution(')

  assert convolutions(64) == 6 and convolutions(96) == 5
  # A device running 2 members at once (a sweep's batch under vmap, the
  # network seeing one image) counts both: 2 x 65536 reach the threshold.
  assert vgg.auto_winograd_min_size(2) == vgg.AUTO_WINOGRAD_MIN_SIZE // 2
  assert vgg.auto_winograd_min_size(3) * 3 >= vgg.AUTO_WINOGRAD_MIN_SIZE
  model = vgg.VGG(winograd_min_size=vgg.auto_winograd_min_size(2))
  assert convolutions(64) == 5


def test_auto_prepares_only_the_layers_it_will_use():
  # With max_side, 'auto' gives kernels to exactly the layers whose input
  # (from the network's own shapes, square images) reaches the threshold.
  params = jax.eval_shape(vgg.VGG().init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  order = vgg.layer_names()
  for side in (32, 64, 95, 96, 128, 200, 256, 512):
    shapes = jax.eval_shape(vgg.VGG().apply, params, jax.ShapeDtypeStruct(
        (1, side, side, 3), jnp.float32))
    want = tuple(
        n for i, n in enumerate(order) if n.startswith('conv') and i > 0
        and max(shapes[order[i - 1]].shape[-1], shapes[n].shape[-1])
        >= vgg.WINOGRAD_MIN_CHANNELS
        and shapes[order[i - 1]].size >= vgg.AUTO_WINOGRAD_MIN_SIZE)
    assert vgg.winograd_layers(params, 'auto', backend='cpu',
                               max_side=side) == want, side
    # 'winograd' is asked for by name: every wide layer, whatever the size.
    assert len(vgg.winograd_layers(params, 'winograd', max_side=side)) == 12
  # By hand at 128 px: blocks 3 and 4 are 32x32 and 16x16; conv3_1 and
  # conv4_1 read 128 and 256 channels, block 5 is 8x8x512 = 32768 values.
  assert vgg.winograd_layers(params, 'auto', backend='cpu', max_side=128) == (
      'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_2', 'conv4_3',
      'conv4_4')
  assert vgg.winograd_layers(params, 'auto', backend='cpu', max_side=64) == ()
  # Over 8 members at 64 px: blocks 3 and 4 are 16x16 and 8x8 per image,
  # 8 x 16x16x128 = 8 x 8x8x256 = 131072 (conv3_1, conv4_1 reach it), block
  # 5's 8 x 4x4x512 = 65536 does not.
  assert vgg.winograd_layers(params, 'auto', backend='cpu', max_side=64,
                             members=8) == (
      'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2',
      'conv4_3', 'conv4_4')
  # The memory estimate counts those layers' transformed kernels (6x6
  # tiles both ways: 8x a kernel's 9 x in x out float32 values).
  layers = ('relu4_2', 'relu5_1')
  grow = (memory._params('vgg19', layers, 'auto', jnp.float32, 'cpu', 64, 8)[0]
          - memory._params('vgg19', layers, 'auto', jnp.float32, 'cpu', 64)[0])
  assert grow == 4 * 8 * 9 * sum(
      params['params'][n]['kernel'].shape[2] * params['params'][n][
          'kernel'].shape[3] for n in ('conv3_1', 'conv3_2', 'conv3_3',
                                       'conv3_4', 'conv4_1', 'conv4_2',
                                       'conv4_3', 'conv4_4'))
  assert vgg.winograd_layers(params, 'auto', backend='cpu', max_side=128,
                             members=4) == (
      'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2',
      'conv4_3', 'conv4_4', 'conv5_1', 'conv5_2', 'conv5_3', 'conv5_4')
  # A run's largest image: the content at image_size or a scaled style.
  assert spec.largest_side(tiny_config(image_size=48)) == 48
  assert spec.largest_side(tiny_config(image_size=48,
                                          style_scale=2.5)) == 120


def test_which_layers():
  params = jax.eval_shape(vgg.VGG().init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  deep = ('conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2',
          'conv4_3', 'conv4_4', 'conv5_1')
  default_layers = ('conv4_2', 'conv1_1', 'conv2_1', 'conv3_1', 'conv4_1',
                    'conv5_1')
  assert vgg.winograd_layers(params, 'winograd', layers=default_layers) == deep
  assert vgg.winograd_layers(params, 'auto', layers=default_layers,
                             backend='cpu') == deep
  assert vgg.winograd_layers(params, 'auto', backend='gpu') == ()
  assert vgg.winograd_layers(params, 'auto', jnp.bfloat16,
                             backend='cpu') == ()
  assert vgg.winograd_layers(params, 'direct') == ()
  assert vgg.winograd_layers(params, 'winograd', layers=('relu3_1',)) == (
      'conv3_1',)
  assert vgg.winograd_layers(params, 'winograd', layers=('pool2',)) == ()
  assert len(vgg.winograd_layers(params, 'winograd')) == 12  # to conv5_4


@pytest.mark.parametrize('convolution,dtype,message', [
    ('fft', 'float32', "unknown convolution 'fft'; accepted: auto, direct, "
     'winograd'),
    ('winograd', 'bfloat16', "convolution='winograd' needs compute_dtype "
     'float32, not bfloat16'),
])
def test_bad_convolution_is_refused(convolution, dtype, message):
  config = tiny_config(convolution=convolution, compute_dtype=dtype)
  with pytest.raises(UserError, match=message.replace('(', r'\(')):
    spec.check(config)



@pytest.mark.slow  # two compiled steps (6 s)
def test_a_batch_counted_whole_takes_the_same_step():
  # 8 members at 32 px: 8 x 8x8x256 values reach the threshold at conv3_2
  # to conv3_4, one member's do not. The batched step then runs those by
  # Winograd, the single one directly: the same step either way.
  config = tiny_config(optimizer='lbfgs')
  program = program_of(config)
  layers = tuple(config.content_layers) + tuple(config.style_layers)
  inputs = targets.load_inputs(config, 32)
  hparams = optim.hyperparams(config)
  made = targets.make_targets(
      config, step.make_model(program),
      step.prepare_params(program, random_vgg19(), layers, 32), inputs)
  rng = np.random.default_rng(0)
  starts = jnp.asarray(inputs.content + rng.normal(
      0, 10, (8, *inputs.content.shape)), jnp.float32)

  mesh = sharding.member_mesh(jax.devices()[:1])

  def run(images):
    # The engine's chunk step (engine.compiled), with the params a group of
    # chunks of n prepares (engine.per_device).
    n = len(images)
    fns = engine.compiled(program.update, mesh, n)
    params = step.prepare_params(program, random_vgg19(), layers, 32,
                                 engine.per_device(n, mesh))
    many = lambda tree: jax.tree.map(
        lambda v: jnp.repeat(jnp.asarray(v)[None], n, axis=0), tree)
    args = (params, many(made), many(hparams), images,
            fns.init(many(hparams), images))
    hlo = fns.step.lower(*args).compile()
    image, _, metrics = fns.step(*args)
    return (np.asarray(image), np.asarray(metrics['loss']),
            hlo.as_text().count(' convolution('))

  batch, batch_loss, batch_convs = run(starts.copy())  # donated
  for j in (0, 5):
    one, one_loss, one_convs = run(starts[j:j + 1].copy())
    np.testing.assert_allclose(batch_loss[j], one_loss[0], rtol=1e-5)
    np.testing.assert_allclose(batch[j], one[0], rtol=0, atol=1e-3)
    assert not np.allclose(one[0], starts[j], atol=1e-2)  # it moved
  # Three layers forward and backward by Winograd in the batch.
  assert batch_convs == one_convs - 2 * 3
