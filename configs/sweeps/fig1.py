"""Figure 1 of Gatys, Ecker & Bethge (2015): reconstructions from one network.

  python scripts/figure1.py --images data/paper --workdir runs/fig1

Top row: content reconstructions of the Tübingen photo from white noise,
using one layer each: conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 (rectified:
relu1_1 ... here). Bottom row: style reconstructions (texture synthesis,
content weight 0) of The Starry Night from the growing layer sets {conv1_1},
{conv1_1, conv2_1}, ..., {conv1_1, ..., conv5_1}. Everything else is
configs/paper.py (normalised VGG-19, average pooling, L-BFGS, 512 px). The
ten reconstructions share one compiled step and run as one batch.
``scripts/figure1.py`` runs it and draws figure1.png; run directly with
``python -m nst.run`` it gives the sweep's contact sheet only.
"""
import pathlib
import runpy

import ml_collections

from nst.figures import CONTENT, FIG1_STYLE, IMAGES_DIR

_PAPER = pathlib.Path(__file__).parents[1] / 'paper.py'


def get_config():
  paper = runpy.run_path(str(_PAPER))
  layers = paper['STYLE_LAYERS']
  c = paper['get_config']()
  c.content_image = f'{IMAGES_DIR}/{CONTENT}'
  c.style_image = f'{IMAGES_DIR}/{FIG1_STYLE}'
  c.save_every = 0

  n = len(layers)
  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  # Members 0-4: content from one layer (no style term);
  # members 5-9: style from the first k layers (no content term).
  c.sweep.axes.content_layers = (tuple((l,) for l in layers)
                                 + (c.content_layers,) * n)
  c.sweep.axes.style_layers = ((layers,) * n
                               + tuple(layers[:k] for k in range(1, n + 1)))
  c.sweep.axes.content_weight = (1.0,) * n + (0.0,) * n
  c.sweep.axes.style_weight = (0.0,) * n + (1.0,) * n
  c.sweep.zip = (('content_layers', 'style_layers', 'content_weight',
                  'style_weight'),)
  c.sweep.rows = 'content_layers'
  c.sweep.cols = ''
  c.sweep.chunk_size = 0        # 0 = chosen for the machine (all that
                                # fit in memory, in one batch)
  return c
