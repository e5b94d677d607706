"""Figure 3 of Gatys, Ecker & Bethge (2015) as one batched sweep.

  python -m nst.run --config configs/sweeps/fig3.py \
      --config.content_image=tubingen.jpg --config.style_image=painting.jpg

Rows: the layers that define style, the paper's {conv1_1}, {conv1_1,
conv2_1}, ... {conv1_1, ..., conv5_1} (rectified: relu1_1 ... here), each
layer weighted 1/(number of layers). Columns: alpha/beta = 1e-5, 1e-4, 1e-3,
1e-2. Everything else is configs/paper.py (512 px, L-BFGS from white noise,
the normalised VGG-19 with average pooling, content relu4_2). The 20 members
share one compiled step (a layer set is a weight vector over
relu1_1..relu5_1) and are sharded over every device; ``sweep.chunk_size``
bounds how many are in memory at once (0: as many as fit). Without the
image overrides it runs on the bundled photo and texture of
configs/default.py. experiments/fig3/README.md has the smaller settings
used there.
"""
import pathlib
import runpy

import ml_collections

_PAPER = pathlib.Path(__file__).parents[1] / 'paper.py'


def get_config():
  paper = runpy.run_path(str(_PAPER))
  c = paper['get_config']()
  c.save_every = 0

  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  # Style layer sets: the first k of relu1_1 ... relu5_1.
  layers = paper['STYLE_LAYERS']
  c.sweep.axes.style_layers = tuple(layers[:k]
                                    for k in range(1, len(layers) + 1))
  c.sweep.axes.ratio = (1e-5, 1e-4, 1e-3, 1e-2)  # alpha/beta
  c.sweep.zip = ()              # product of the two axes: 5 x 4 members
  c.sweep.rows = 'style_layers'
  c.sweep.cols = 'ratio'
  c.sweep.chunk_size = 0        # 0 = chosen for the machine (all that
                                # fit in memory, in one batch)
  return c
