"""The illustration2vec network and loss weights of the project's TF seed.

  python scripts/convert_weights.py illust2vec_ver200.caffemodel i2v.npz \
      --network i2v
  python -m nst.run --config configs/i2v.py --config.weights=i2v.npz \
      --config.content_image=drawing.png --config.style_image=painting.jpg

I2V (Saito & Matsui 2015) was trained on illustrations, so it can suit
drawings better than VGG. Its layers conv1_1, conv2_1, conv3_2, conv4_2 and
conv5_2 (rectified: relu...) carry the content with weights 0, 0, 1, 1, 10
(the zero-weight layers are left out here) and the style with weights 0.1,
1, 10, 10, 100, as in the seed, on the paper's loss formulas
(``loss_scaling='paper'``) that the seed's weights were set for. There are
no pretrained I2V weights to fetch: ``weights`` must name the converted
file. Adam from the content image, 300 steps at one scale, as in the seed;
the rest is configs/default.py. For the default's recipe on
I2V instead (its layers relu1_1 ... relu5_1 and relu4_2 exist in I2V too,
and relative scaling keeps the balance across networks), run
configs/default.py with ``--config.network=i2v --config.weights=i2v.npz``.
"""
import pathlib
import runpy

_DEFAULT = pathlib.Path(__file__).with_name('default.py')


def get_config():
  c = runpy.run_path(str(_DEFAULT))['get_config']()
  c.network = 'i2v'
  c.weights = 'i2v.npz'         # from scripts/convert_weights.py
  c.content_layers = ('relu3_2', 'relu4_2', 'relu5_2')
  c.content_layer_weights = (1.0, 1.0, 10.0)
  c.style_layers = ('relu1_1', 'relu2_1', 'relu3_2', 'relu4_2', 'relu5_2')
  c.style_layer_weights = (0.1, 1.0, 10.0, 10.0, 100.0)
  c.style_layer_trims = ()
  c.style_weight = 1e3
  c.loss_scaling = 'paper'
  # The seed's optimiser: Adam, 300 steps at one scale.
  c.optimizer = 'adam'
  c.num_steps = 300
  c.scales = c.scale_steps = ()
  return c
