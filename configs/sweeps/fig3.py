"""Figure 3 of Gatys, Ecker & Bethge (2015) as one batched sweep.

  python -m nst.run --config configs/sweeps/fig3.py \
      --config.content_image=tubingen.jpg --config.style_image=painting.jpg

Rows: the layers that define style, {conv1_1}, {conv1_1, conv2_1}, ...
{conv1_1, ..., conv5_1}, each layer weighted 1/(number of layers). Columns:
alpha/beta = 1e-5, 1e-4, 1e-3, 1e-2. Everything else is configs/paper.py
(512 px, L-BFGS from white noise, average pooling, content conv4_2). The 20
members share one compiled step (a layer set is a weight vector over
conv1_1..conv5_1) and are sharded over every device; ``sweep.chunk_size``
bounds how many are in memory at once. Without the image overrides it runs
on the bundled photo and texture of configs/default.py.

On a CPU, see experiments/fig3/README.md for the smaller, faster settings
used there.
"""
import pathlib
import runpy

import ml_collections

_PAPER = pathlib.Path(__file__).parents[1] / 'paper.py'
_STYLE_LAYERS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')


def get_config():
  c = runpy.run_path(str(_PAPER))['get_config']()
  c.save_every = 0

  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  # Style layer sets: the first k of conv1_1 ... conv5_1.
  c.sweep.axes.style_layers = tuple(
      _STYLE_LAYERS[:k] for k in range(1, len(_STYLE_LAYERS) + 1))
  c.sweep.axes.ratio = (1e-5, 1e-4, 1e-3, 1e-2)  # alpha/beta
  c.sweep.zip = ()              # product of the two axes: 5 x 4 members
  c.sweep.rows = 'style_layers'
  c.sweep.cols = 'ratio'
  c.sweep.chunk_size = 0        # 0 = all 20 members in one batch
  return c
