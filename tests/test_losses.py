"""Losses against values computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst import losses

# One 3x1 feature map with 2 channels: F = [[1, 2], [3, 4], [5, 6]].
F = jnp.array([[1., 2.], [3., 4.], [5., 6.]]).reshape(3, 1, 2)


def test_gram_is_f_transpose_f():
  # [[1+9+25, 2+12+30], [2+12+30, 4+16+36]]
  np.testing.assert_allclose(losses.gram(F), [[35., 44.], [44., 56.]])


def test_layer_style_loss_normalisation():
  # N = 2 filters, M = 3 positions: sum G^2 / (4 * 2^2 * 3^2)
  expected = (35**2 + 44**2 + 44**2 + 56**2) / (4 * 4 * 9)
  got = losses.layer_style_loss(F, {'srm': jnp.zeros((2, 2))})
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Against its own Gram matrix the loss is zero.
  own = losses.style_target(*losses.moments(F), 'gram')
  assert float(losses.layer_style_loss(F, own)) == 0.0


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
  grams = {'a': {'srm': jnp.zeros((2, 2))}, 'b': {'srm': jnp.zeros((2, 2))}}
  e_a = 8233 / 144
  # G scales by 4 for 2F, so E scales by 16.
  got = losses.style_loss(feats=feats, targets=grams,
                          weights={'a': 0.2, 'b': 0.8})
  np.testing.assert_allclose(got, 0.2 * e_a + 0.8 * 16 * e_a, rtol=1e-6)


def test_tv_loss():
  image = jnp.array([[0., 1.], [3., 5.]])[..., None]
  # vertical: 3^2 + 4^2 = 25; horizontal: 1^2 + 2^2 = 5
  np.testing.assert_allclose(losses.tv_loss(image), 30.0)


def test_total_loss_combines_parts():
  image = jnp.array([[0., 1.], [3., 5.]])[..., None]
  total, parts = losses.total_loss(
      feats={'a': F}, image=image, targets={
          'content': {'features': {'a': jnp.zeros_like(F)},
                      'weights': {'a': 1.0}},
          'style': {'targets': {'a': {'srm': jnp.zeros((2, 2))}},
                    'weights': {'a': 1.0}, 'masks': None,
                    'region_weights': None},
          'tv': {'scale': 1.0}},
      weights={'content': 2.0, 'style': 3.0, 'tv': 0.5})
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


def test_moments_are_per_position_and_masks_weigh_by_their_square():
  mean, srm = losses.moments(F)
  np.testing.assert_allclose(mean, [3., 4.])
  np.testing.assert_allclose(srm, np.array([[35., 44.], [44., 56.]]) / 3)
  # Mask (1, 0, 0.5): weights (1, 0, 0.25) on rows (1,2), (3,4), (5,6).
  mask = jnp.array([1., 0., 0.5]).reshape(3, 1)
  mean, srm = losses.moments(F, mask)
  np.testing.assert_allclose(mean, [(1 + 1.25) / 1.25, (2 + 1.5) / 1.25])
  np.testing.assert_allclose(
      srm, np.array([[1 + 6.25, 2 + 7.5], [2 + 7.5, 4 + 9]]) / 1.25,
      rtol=1e-6)
  # An empty mask gives zeros, not NaN.
  zero = losses.moments(F, jnp.zeros((3, 1)))
  assert float(jnp.abs(zero[0]).sum() + jnp.abs(zero[1]).sum()) == 0.0


def test_gram_loss_of_images_of_different_sizes_compares_per_position():
  # F repeated twice is the same texture over twice the positions.
  twice = jnp.concatenate([F, F], axis=0)
  target = losses.style_target(*losses.moments(twice), 'gram')
  assert float(losses.layer_style_loss(F, target)) == 0.0


@pytest.mark.slow
def test_mean_cov_loss_is_the_squared_wasserstein_distance_over_n():
  # One channel: W2^2 between 1-D Gaussians = (mu - mu')^2 + (s - s')^2.
  f = jnp.array([1., 2., 3.]).reshape(3, 1, 1)    # mu 2, var 2/3
  t = jnp.array([0., 0., 4.]).reshape(3, 1, 1)    # mu 4/3, var 32/9
  target = losses.style_target(*losses.moments(t), 'mean_cov')
  expected = ((2 - 4 / 3) ** 2 +
              (np.sqrt(2 / 3 + losses.EPS) - np.sqrt(32 / 9)) ** 2)
  np.testing.assert_allclose(losses.layer_style_loss(f, target), expected,
                             rtol=1e-5)
  # Two channels, f2's fully correlated and t2's not: the general formula
  # with explicit matrices (numpy), divided by N = 2.
  f2 = jnp.concatenate([f, 2 * f], axis=-1)
  t2 = jnp.concatenate([t, jnp.array([1., 5., 3.]).reshape(3, 1, 1)], -1)
  target2 = losses.style_target(*losses.moments(t2), 'mean_cov')
  c1 = np.cov(np.asarray(f2).reshape(3, 2), rowvar=False, bias=True)
  c1 += losses.EPS * np.eye(2)
  c2 = np.cov(np.asarray(t2).reshape(3, 2), rowvar=False, bias=True)
  root = _sqrtm(c2)
  w2 = (np.sum((np.asarray(f2).reshape(3, 2).mean(0) -
                np.asarray(t2).reshape(3, 2).mean(0)) ** 2) +
        np.trace(c1 + c2 - 2 * _sqrtm(root @ c1 @ root)))
  np.testing.assert_allclose(losses.layer_style_loss(f2, target2), w2 / 2,
                             rtol=1e-4)
  # Against itself the distance is ~0 (eps aside) and the gradient finite.
  own = losses.style_target(*losses.moments(f2), 'mean_cov')
  assert abs(float(losses.layer_style_loss(f2, own))) < 1e-3
  grad = jax.grad(lambda x: losses.layer_style_loss(x, own))(f2)
  assert bool(jnp.isfinite(grad).all())
  zeros = jax.grad(lambda x: losses.layer_style_loss(x, own))(0 * f2)
  assert bool(jnp.isfinite(zeros).all())


def _sqrtm(c):
  values, vectors = np.linalg.eigh(c)
  return (vectors * np.sqrt(np.maximum(values, 0))) @ vectors.T


def test_regions_sum_weighted_distances():
  targets = {'srm': jnp.zeros((2, 2, 2))}  # two regions, zero targets
  masks = jnp.array([[1., 1., 1.], [1., 0., 0.]]).reshape(2, 3, 1)
  got = losses.layer_style_loss(F, targets, masks, jnp.array([0.5, 2.0]))
  whole = (35**2 + 44**2 + 44**2 + 56**2) / (4 * 4 * 9)
  first_row = (1 + 2 * 4 + 16) / (4 * 4)  # srm of row (1, 2) alone
  np.testing.assert_allclose(got, 0.5 * whole + 2.0 * first_row, rtol=1e-6)


# --- Scaling: 'relative' against hand-computed relative errors, 'paper' as
# the formulas above.
P = jnp.array([[2., 0.], [1., 1.], [0., 3.]]).reshape(3, 1, 2)


def test_relative_content_is_the_squared_relative_error():
  # |F - P|^2 = 1+4+4+9+25+9 = 52; |P|^2 = 4+0+1+1+0+9 = 15.
  scale = losses.content_scale(P, 'relative')
  np.testing.assert_allclose(scale * losses.layer_content_loss(F, P),
                             52 / 15, rtol=1e-6)
  assert float(losses.content_scale(P, 'paper')) == 1.0


def test_relative_gram_style_is_the_squared_relative_error_of_s():
  # S = F^T F / 3 and S_P = P^T P / 3 = [[5, 1], [1, 10]] / 3.
  s_f = np.array([[35., 44.], [44., 56.]]) / 3
  s_p = np.array([[5., 1.], [1., 10.]]) / 3
  expected = np.sum((s_f - s_p) ** 2) / np.sum(s_p ** 2)
  target = losses.style_target(*losses.moments(P), 'gram', 'relative')
  np.testing.assert_allclose(losses.layer_style_loss(F, target), expected,
                             rtol=1e-5)
  paper = losses.style_target(*losses.moments(P), 'gram', 'paper')
  assert float(paper['scale']) == 1.0
  # The paper's E_l with G = F^T F and M = 3 positions, N = 2 filters.
  g_f, g_p = 3 * s_f, 3 * s_p
  np.testing.assert_allclose(losses.layer_style_loss(F, paper),
                             np.sum((g_f - g_p) ** 2) / (4 * 2**2 * 3**2),
                             rtol=1e-5)


def test_relative_mean_cov_is_over_the_targets_second_moment():
  paper = losses.style_target(*losses.moments(P), 'mean_cov', 'paper')
  relative = losses.style_target(*losses.moments(P), 'mean_cov', 'relative')
  # |mu_P|^2 + tr C_P = tr S_P = (5 + 10) / 3, over N = 2.
  np.testing.assert_allclose(
      losses.layer_style_loss(F, relative),
      losses.layer_style_loss(F, paper) / (15 / 3 / 2), rtol=1e-5)


def test_mean_style_distance_by_hand():
  # mu_F = (3, 4), mu_P = (P's column means); |mu_F - mu_P|^2 / N, N = 2.
  mu_p = np.asarray(P).reshape(3, 2).mean(axis=0)
  expected = np.sum((np.array([3., 4.]) - mu_p) ** 2) / 2
  paper = losses.style_target(*losses.moments(P), 'mean', 'paper')
  assert set(paper) == {'mean', 'scale'}
  assert losses.style_kind(paper) == 'mean'
  np.testing.assert_allclose(losses.layer_style_loss(F, paper), expected,
                             rtol=1e-6)
  relative = losses.style_target(*losses.moments(P), 'mean', 'relative')
  np.testing.assert_allclose(losses.layer_style_loss(F, relative),
                             expected / (np.sum(mu_p ** 2) / 2), rtol=1e-5)
  # Any image with the target's means scores 0, however they are placed:
  # F's rows reversed, or every position at the mean.
  own = losses.style_target(*losses.moments(F), 'mean', 'relative')
  flat = jnp.broadcast_to(jnp.array([3., 4.]), (3, 1, 2))
  for same in (F[::-1], flat):
    assert float(losses.layer_style_loss(same, own)) == 0.0
  # Its gradient is the same at every position (it places nothing).
  grad = jax.grad(lambda x: losses.layer_style_loss(x, relative))(F)
  np.testing.assert_allclose(grad[0], grad[1], rtol=1e-6)
  np.testing.assert_allclose(grad[0], grad[2], rtol=1e-6)


def test_typical_mask_leaves_out_the_most_unusual_positions():
  # 10 positions of 3 channels around (1, 1, 1); position 7 is an object
  # part: far from the rest along a direction the others barely vary in.
  rng = np.random.default_rng(0)
  f = 1.0 + 0.1 * rng.standard_normal((10, 3))
  f[7] = (1.0, 1.0, 4.0)
  feats = jnp.asarray(f.reshape(2, 5, 3), jnp.float32)
  mask = np.asarray(losses.typical_mask(feats, 0.1))
  expected = np.ones(10)
  expected[7] = 0
  np.testing.assert_array_equal(mask.reshape(-1), expected)
  np.testing.assert_array_equal(losses.typical_mask(feats, 0.0),
                                np.ones((2, 5)))
  # The moments under it are the other nine positions'.
  mean, srm = losses.moments(feats, jnp.asarray(mask))
  rest = np.delete(f, 7, axis=0)
  np.testing.assert_allclose(mean, rest.mean(0), rtol=1e-5)
  np.testing.assert_allclose(srm, rest.T @ rest / 9, rtol=1e-5)


def test_typical_mask_of_a_constant_map_keeps_the_quantile():
  # All positions alike (a zero covariance, inverted through the ridge):
  # every distance is 0 and within the quantile, so nothing is left out.
  feats = jnp.ones((4, 4, 3))
  np.testing.assert_array_equal(losses.typical_mask(feats, 0.25),
                                np.ones((4, 4)))


def test_style_kind_of_each_target():
  for kind in losses.STYLE_DISTANCES:
    target = losses.style_target(*losses.moments(P), kind, 'relative')
    assert losses.style_kind(target) == kind
  with pytest.raises(ValueError, match="'w2'; accepted: gram, mean_cov, "
                     'mean'):
    losses.style_target(*losses.moments(P), 'w2')
  with pytest.raises(ValueError, match=r"keys \['cov'\] is of no distance"):
    losses.style_kind({'cov': 1.0, 'scale': 1.0})


def test_a_style_distance_added_to_the_table_is_used(monkeypatch):
  # |mu - mu_A|_1 / N: a table entry, nothing else.
  l1 = losses.StyleDistance(
      frozenset({'mean_l1'}), lambda mean, srm: {'mean_l1': mean},
      lambda mean, srm, t: jnp.sum(jnp.abs(mean - t['mean_l1'])) / srm.shape[-1],
      lambda mean, srm: jnp.sum(jnp.abs(mean)) / srm.shape[-1], 1e-8,
      lambda n: n)
  monkeypatch.setitem(losses.STYLE_DISTANCES, 'mean_l1', l1)
  target = losses.style_target(*losses.moments(P), 'mean_l1', 'relative')
  assert losses.style_kind(target) == 'mean_l1'
  mean, srm = losses.moments(F)
  got = losses.style_distance(mean, srm, target)
  expected = (np.abs(np.asarray(mean) - np.asarray(losses.moments(P)[0]))
              .sum() / np.abs(np.asarray(losses.moments(P)[0])).sum())
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_relative_losses_do_not_depend_on_the_activation_scale():
  # A layer whose activations are 7x larger (another network, or another
  # normalisation) gives the same relative losses; the paper's grow as the
  # 2nd (content) and 4th (gram style) power.
  for kind in losses.STYLE_DISTANCES:
    one, seven = (losses.layer_style_loss(c * F, losses.style_target(
        *losses.moments(c * P), kind, 'relative')) for c in (1.0, 7.0))
    np.testing.assert_allclose(one, seven, rtol=1e-3)
  content = [losses.content_scale(c * P, 'relative') *
             losses.layer_content_loss(c * F, c * P) for c in (1.0, 7.0)]
  np.testing.assert_allclose(content[0], content[1], rtol=1e-6)
  paper = [losses.layer_style_loss(c * F, losses.style_target(
      *losses.moments(c * P), 'gram', 'paper')) for c in (1.0, 7.0)]
  np.testing.assert_allclose(paper[1] / paper[0], 7.0**4, rtol=1e-4)


def test_relative_scales_of_all_zero_targets_are_finite():
  zero = jnp.zeros((3, 1, 2))
  assert np.isfinite(float(losses.content_scale(zero, 'relative')))
  for kind in losses.STYLE_DISTANCES:
    target = losses.style_target(*losses.moments(zero), kind, 'relative')
    assert np.isfinite(float(losses.layer_style_loss(F, target)))


def test_relative_tv_counts_in_units_of_the_content_images_own():
  content = jnp.array([[0., 1.], [3., 5.]])[..., None] * 10  # tv 3000
  image = jnp.array([[0., 2.], [0., 2.]])[..., None] * 10    # tv 800
  scale = losses.tv_scale(content, 'relative')
  np.testing.assert_allclose(scale * losses.tv_loss(image), 800 / 3000,
                             rtol=1e-6)
  assert float(losses.tv_scale(content, 'paper')) == 1.0
  # A flat content image: the floor, one grey level squared per pixel.
  np.testing.assert_allclose(losses.tv_scale(jnp.zeros((2, 2, 3)),
                                             'relative'), 1 / 4)
