"""The strength knob: the default recipe at five style weights, as one
batched sweep (the contact sheet of the README's "Choosing the strength").

  python -m nst.run --config configs/sweeps/strength.py \
      [--config.content_image=photo.jpg --config.style_image=painting.jpg]

Everything is configs/default.py except ``style_weight``, which doubles from
one member to the next around the default's 2.5. Results land in
``members/NNNN.png`` with contact_sheet.png and index.html, one column per
strength.
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
  c.sweep.axes.style_weight = (0.625, 1.25, 2.5, 5.0, 10.0)
  c.sweep.zip = ()
  c.sweep.rows = ''
  c.sweep.cols = 'style_weight'
  c.sweep.chunk_size = 0        # 0 = chosen for the machine (all that
                                # fit in memory, in one batch)
  return c
