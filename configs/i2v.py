"""The illustration2vec network and loss weights of the project's TF seed.

  python scripts/convert_weights.py illust2vec_ver200.caffemodel i2v.npz \
      --network i2v
  python -m nst.run --config configs/i2v.py --config.weights=i2v.npz \
      --config.content_image=drawing.png --config.style_image=painting.jpg

I2V (Saito & Matsui 2015) was trained on illustrations, so it can suit
drawings better than VGG. Its layers conv1_1, conv2_1, conv3_2, conv4_2 and
conv5_2 (rectified: relu...) carry the content with weights 0, 0, 1, 1, 10
(the zero-weight layers are left out here) and the style with weights 0.1,
1, 10, 10, 100, as in the seed. There are no pretrained I2V weights to fetch:
``weights`` must name the converted file. Everything else is
configs/default.py (Adam from the content image, 2.0 x0.94 every 100 steps).
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
  c.style_weight = 1e3
  return c
