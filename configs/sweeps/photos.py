"""Batch stylisation: many photos, one style, as one batched sweep.

  python -m nst.run --config configs/sweeps/photos.py \
      --config.sweep.axes.content_image="('photos/',)" \
      --config.style_image=painting.jpg

Every image in ``photos/`` (a folder in the tuple is replaced by the images
in it, sorted by name) is stylised with the settings of configs/default.py.
Photos whose resized shapes agree share one compiled, batched step; each
other shape forms its own group. Without overrides it stylises three photos
bundled with scikit-image (two shapes: two groups). Results land in
``members/NNNN.png``, with a contact sheet and index.html of all of them.
"""
import pathlib
import runpy

import ml_collections

_DEFAULT = pathlib.Path(__file__).parents[1] / 'default.py'


def get_config():
  c = runpy.run_path(str(_DEFAULT))['get_config']()
  c.save_every = 0

  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict()
  c.sweep.axes.content_image = ('skimage:chelsea', 'skimage:coffee',
                                'skimage:astronaut')
  c.sweep.zip = ()
  c.sweep.rows = ''
  c.sweep.cols = 'content_image'  # one row of results
  c.sweep.chunk_size = 0        # 0 = chosen for the machine (all that
                                # fit in memory, in one batch)
  return c
