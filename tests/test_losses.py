"""Losses against values computed by hand."""
import jax.numpy as jnp
import numpy as np

from nst import losses

# One 3x1 feature map with 2 channels: F = [[1, 2], [3, 4], [5, 6]].
F = jnp.array([[1., 2.], [3., 4.], [5., 6.]]).reshape(3, 1, 2)


def test_gram_is_f_transpose_f():
  # [[1+9+25, 2+12+30], [2+12+30, 4+16+36]]
  np.testing.assert_allclose(losses.gram(F), [[35., 44.], [44., 56.]])


def test_layer_style_loss_normalisation():
  # N = 2 filters, M = 3 positions: sum G^2 / (4 * 2^2 * 3^2)
  expected = (35**2 + 44**2 + 44**2 + 56**2) / (4 * 4 * 9)
  got = losses.layer_style_loss(F, jnp.zeros((2, 2)))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Against its own Gram matrix the loss is zero.
  assert float(losses.layer_style_loss(F, losses.gram(F))) == 0.0


def test_layer_content_loss_is_half_squared_error():
  target = jnp.ones_like(F)
  # (0, 1, 2, 3, 4, 5)^2 summed = 55, halved.
  np.testing.assert_allclose(losses.layer_content_loss(F, target), 27.5)


def test_weighted_sums_over_layers():
  feats = {'a': F, 'b': 2 * F}
  zeros = {'a': jnp.zeros((3, 1, 2)), 'b': jnp.zeros((3, 1, 2))}
  # 1/2 sum F^2 = 45.5; for 2F it is 182.
  got = losses.content_loss(feats=feats, targets=zeros,
                            weights={'a': 1.0, 'b': 0.5})
  np.testing.assert_allclose(got, 45.5 + 0.5 * 182.0)
  grams = {'a': jnp.zeros((2, 2)), 'b': jnp.zeros((2, 2))}
  e_a = 8233 / 144
  # G scales by 4 for 2F, so E scales by 16.
  got = losses.style_loss(feats=feats, grams=grams,
                          weights={'a': 0.2, 'b': 0.8})
  np.testing.assert_allclose(got, 0.2 * e_a + 0.8 * 16 * e_a, rtol=1e-6)


def test_tv_loss():
  image = jnp.array([[0., 1.], [3., 5.]])[..., None]
  # vertical: 3^2 + 4^2 = 25; horizontal: 1^2 + 2^2 = 5
  np.testing.assert_allclose(losses.tv_loss(image), 30.0)


def test_total_loss_combines_parts():
  image = jnp.array([[0., 1.], [3., 5.]])[..., None]
  total, parts = losses.total_loss(
      feats={'a': F}, image=image, content_targets={'a': jnp.zeros_like(F)},
      style_grams={'a': jnp.zeros((2, 2))}, content_weights={'a': 1.0},
      style_weights={'a': 1.0}, alpha=2.0, beta=3.0, tv_weight=0.5)
  np.testing.assert_allclose(parts['content'], 45.5)
  np.testing.assert_allclose(parts['style'], 8233 / 144, rtol=1e-6)
  np.testing.assert_allclose(parts['tv'], 30.0)
  np.testing.assert_allclose(total, 2 * 45.5 + 3 * 8233 / 144 + 15.0,
                             rtol=1e-6)


def test_gram_accumulates_bfloat16_in_float32():
  # A bfloat16 running sum of ones stalls at 256 (8 significant bits).
  f = jnp.ones((64, 64, 2), jnp.bfloat16)
  g = losses.gram(f)
  assert g.dtype == jnp.float32
  np.testing.assert_allclose(g, np.full((2, 2), 4096.0))
