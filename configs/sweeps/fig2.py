"""Figure 2 of Gatys, Ecker & Bethge (2015): one photo in five styles.

  python scripts/figure2.py --images data/paper --workdir runs/fig2

The Tübingen photo in the styles of The Shipwreck of the Minotaur (B), The
Starry Night (C), The Scream (D) with alpha/beta = 1e-3, and Femme nue
assise (E), Composition VII (F) with 1e-4. Everything else is
configs/paper.py (normalised VGG-19, average pooling, content relu4_2, style
relu1_1 ... relu5_1, L-BFGS from white noise, 512 px). The five members run
as one batch. ``scripts/figure2.py`` runs it, leaves out the paintings that
are missing, and draws figure2.png (panel A the photo, the paintings as
insets); run directly with ``python -m nst.run`` it gives the sweep's
contact sheet only.
"""
import pathlib
import runpy

import ml_collections

from nst.figures import FIG2_PAINTINGS, IMAGES_DIR

_PAPER = pathlib.Path(__file__).parents[1] / 'paper.py'


def get_config():
  c = runpy.run_path(str(_PAPER))['get_config']()
  c.content_image = f'{IMAGES_DIR}/tubingen.jpg'
  c.style_image = f'{IMAGES_DIR}/{FIG2_PAINTINGS[0].file}'
  c.save_every = 0

  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  c.sweep.axes.style_image = tuple(f'{IMAGES_DIR}/{p.file}'
                                   for p in FIG2_PAINTINGS)
  c.sweep.axes.ratio = tuple(p.ratio for p in FIG2_PAINTINGS)  # the paper's
  c.sweep.zip = (('style_image', 'ratio'),)
  c.sweep.rows = 'style_image'
  c.sweep.cols = ''
  c.sweep.chunk_size = 0        # 0 = chosen for the machine (all that
                                # fit in memory, in one batch)
  return c
