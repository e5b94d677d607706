"""VGG layer names, shapes, early stopping and pooling."""
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst import vgg
from nst.errors import UserError


def test_layer_names():
  names19, names16 = vgg.layer_names('vgg19'), vgg.layer_names('vgg16')
  assert len(names19) == 16 + 16 + 5 and len(names16) == 13 + 13 + 5
  assert names19[:5] == ('conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1')
  assert names19[-3:] == ('conv5_4', 'relu5_4', 'pool5')
  assert 'conv3_4' in names19 and 'conv3_4' not in names16


@pytest.mark.parametrize('network', ['vgg16', 'vgg19', 'i2v'])
def test_output_names_and_shapes(network):
  model = vgg.VGG(network=network)
  x = jnp.zeros((2, 32, 48, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x)
  out = jax.eval_shape(model.apply, params, x)
  assert sorted(out) == sorted(vgg.layer_names(network))
  assert out['conv1_1'].shape == (2, 32, 48, 64)
  assert out['pool1'].shape == (2, 16, 24, 64)
  assert out['conv3_1'].shape == (2, 8, 12, 256)
  assert out['relu5_1'].shape == (2, 2, 3, 512)
  assert out['pool5'].shape == (2, 1, 1, 512)
  convs = vgg.conv_names(network)
  assert sorted(params['params']) == sorted(convs)
  assert params['params']['conv2_1']['kernel'].shape == (3, 3, 64, 128)


@pytest.mark.slow
def test_stops_at_deepest_requested_layer():
  model = vgg.VGG()
  x = jnp.zeros((1, 32, 32, 3))
  params = model.init(jax.random.key(0), x, ('relu2_1', 'conv1_2'))
  assert sorted(params['params']) == ['conv1_1', 'conv1_2', 'conv2_1']
  full = model.init(jax.random.key(0), x)
  out = model.apply(full, x, ('relu2_1', 'conv1_2'))
  assert sorted(out) == ['conv1_2', 'relu2_1']
  # The program holds exactly the three convolutions up to conv2_1.
  jaxpr = str(jax.make_jaxpr(lambda p, x: model.apply(p, x, ('relu2_1',)))(
      full, x))
  assert jaxpr.count('conv_general_dilated') == 3


@pytest.mark.slow
def test_prepared_params_stop_at_the_deepest_requested_layer():
  x = jnp.zeros((1, 32, 32, 3))
  full = vgg.VGG().init(jax.random.key(0), x)
  prepared = vgg.prepare(full, 'winograd', layers=('relu1_1', 'relu3_1'))
  want = ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1']
  assert sorted(prepared['params']) == sorted(prepared['flipped']) == want
  assert sorted(prepared['winograd']) == ['conv3_1']
  assert sorted(vgg.prepare(full)['params']) == sorted(full['params'])
  out = vgg.VGG().apply(prepared, x + 1, ('relu3_1',))['relu3_1']
  np.testing.assert_allclose(
      out, vgg.VGG().apply(full, x + 1, ('relu3_1',))['relu3_1'],
      rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(out))))


def test_pooling_modes():
  x = jax.random.normal(jax.random.key(1), (1, 8, 8, 3))
  layers = ('relu1_2', 'pool1')
  params = vgg.VGG().init(jax.random.key(0), x, layers)
  # Jitted: op by op, each operation would compile on its own.
  outs = {p: jax.jit(vgg.VGG(pooling=p).apply, static_argnums=2)(
      params, x, layers) for p in ('max', 'avg')}
  r = np.asarray(outs['max']['relu1_2']).reshape(1, 4, 2, 4, 2, 64)
  np.testing.assert_allclose(outs['max']['pool1'], r.max(axis=(2, 4)),
                             rtol=1e-6)
  np.testing.assert_allclose(outs['avg']['pool1'], r.mean(axis=(2, 4)),
                             rtol=1e-5, atol=1e-6)


def test_bad_layer_and_pooling_are_user_errors():
  with pytest.raises(UserError, match=r"\['conv6_1'\].*accepted: conv1_1"):
    vgg.check_layers(['conv1_1', 'conv6_1'])
  with pytest.raises(UserError, match='conv3_4'):
    vgg.check_layers(['conv3_4'], 'vgg16')
  with pytest.raises(UserError, match=r"\['conv1_2'\] for i2v"):
    vgg.check_layers(['conv1_2'], 'i2v')
  with pytest.raises(UserError, match="'vgg11'.*accepted: vgg19, vgg16, i2v"):
    vgg.check_network('vgg11')
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(UserError, match="'median'"):
    vgg.VGG(pooling='median').init(jax.random.key(0), x)


def test_min_size():
  assert vgg.min_size(['conv1_1']) == 1
  assert vgg.min_size(['conv4_2', 'relu2_1']) == 8
  assert vgg.min_size(['pool5']) == 32


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_pool_matches_reduce_window_values_and_gradient(kind):
  # Odd sides (the last row and column are dropped) and ReLU outputs, whose
  # zero ties are where the two gradients could differ.
  x = jax.nn.relu(jax.random.normal(jax.random.key(2), (2, 9, 7, 5)))
  nn_pool = {'max': flax.linen.max_pool, 'avg': flax.linen.avg_pool}[kind]
  ref = lambda x: nn_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(vgg.pool(x, kind), ref(x))
  w = jax.random.normal(jax.random.key(3), (2, 4, 3, 5))
  grads = [jax.grad(lambda x: jnp.sum(w * f(jax.nn.relu(x))))(x - 0.5)
           for f in (lambda x: vgg.pool(x, kind), ref)]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_remat_same_features_and_gradient_params_tree():
  x = jax.random.normal(jax.random.key(4), (1, 16, 16, 3))
  params = vgg.VGG().init(jax.random.key(0), x, ('conv3_1',))
  layers = ('relu1_1', 'conv2_2', 'conv3_1')

  def loss(model, x):
    out = model.apply(params, x, layers)
    return sum(jnp.sum(jnp.sin(v)) for v in out.values())

  plain, remat = vgg.VGG(), vgg.VGG(remat=True)
  assert (jax.tree.structure(remat.init(jax.random.key(0), x, ('conv3_1',)))
          == jax.tree.structure(params))
  for a, b in zip(jax.tree.leaves(plain.apply(params, x, layers)),
                  jax.tree.leaves(remat.apply(params, x, layers))):
    np.testing.assert_array_equal(a, b)
  g_plain = jax.grad(lambda x: loss(plain, x))(x)
  g_remat = jax.grad(lambda x: loss(remat, x))(x)
  np.testing.assert_allclose(g_remat, g_plain, rtol=1e-5, atol=1e-6)
  # Rematerialised: the backward program recomputes the 4 convolutions of
  # blocks 1 and 2 (block 3 ends at conv3_1, an output: nothing to redo).
  count = lambda m: str(jax.make_jaxpr(jax.grad(lambda x: loss(m, x)))(
      x)).count('conv_general_dilated')
  assert count(plain) == 10 and count(remat) == 14


def test_flipped_kernels_give_the_same_gradients():
  x = jax.random.normal(jax.random.key(5), (1, 16, 16, 3))
  params = vgg.VGG().init(jax.random.key(0), x, ('conv3_1',))
  flipped = vgg.with_flipped(params)
  assert sorted(flipped['flipped']) == sorted(params['params'])
  # conv2_1: (3, 3, 64, 128) -> (3, 3, 128, 64), rotated by 180 degrees.
  k, f = params['params']['conv2_1']['kernel'], flipped['flipped']['conv2_1'][
      'kernel']
  np.testing.assert_array_equal(f[2, 0, 5, 7], k[0, 2, 7, 5])

  def loss(variables, x, remat=False):
    out = vgg.VGG(remat=remat).apply(variables, x, ('conv1_2', 'conv3_1'))
    return sum(jnp.sum(jnp.sin(v)) for v in out.values())

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
  for remat in (False, True):
    dv_plain, dx_plain = grad(params, x, remat)
    dv_flip, dx_flip = grad(flipped, x, remat)
    np.testing.assert_allclose(dx_flip, dx_plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(dv_flip['params']),
                    jax.tree.leaves(dv_plain['params'])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_small_maps_are_convolved_as_a_matrix_product_with_the_same_result():
  # Below vgg.SMALL_MAP positions the 3x3 neighbourhoods times the kernel;
  # the same values and input gradients as XLA's convolution.
  import jax
  import jax.numpy as jnp
  key = jax.random.PRNGKey(3)
  lax_conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  conv = jax.jit(vgg.conv)  # op by op, each operation would compile alone
  for shape in ((2, 2, 4, 16), (1, 1, 3, 16), (3, 3, 5, 16)):
    x = jax.random.normal(key, shape)
    k = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, 16, 8))
    assert shape[1] * shape[2] < vgg.SMALL_MAP
    np.testing.assert_allclose(conv(x, k), lax_conv(x, k),
                               rtol=1e-5, atol=1e-4)
    grad = lambda f: jax.jit(jax.grad(
        lambda x, k: jnp.sum(jnp.sin(f(x, k)))))(x, k)
    np.testing.assert_allclose(grad(vgg.conv), grad(lax_conv),
                               rtol=1e-4, atol=1e-4)
