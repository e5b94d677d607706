"""Large outputs (2048 px): coarse to fine, with iterate averaging.

  python -m nst.run --config configs/large.py \
      --config.content_image=photo.jpg --config.style_image=painting.jpg

Optimising a 2048 px image directly moves each pixel a little per step, so
the large structures of a style (strokes, swirls tens of pixels wide) form
slowly. Coarse to fine, the structure is settled at 256 px where a step is
64 times cheaper, and each finer scale starts from the previous output,
resized, and adds detail (Gatys et al. 2017; crowsonkb's style-transfer
default). Meant for a GPU: a 2048 px VGG-19 step takes seconds on a CPU.

Measured with scripts/bench_quality.py (experiments/quality): at 2048 px on
an H200, coarse to fine ended 0.94x the content and 0.73x the style loss of
300 single-scale Adam steps, taking 1.44x their time; iterate averaging
(avg_decay=0.99) scored worse on both losses at 512 px, so it is off here.
"""
import pathlib
import runpy

_DEFAULT = pathlib.Path(__file__).with_name('default.py')


def get_config():
  c = runpy.run_path(str(_DEFAULT))['get_config']()
  c.image_size = 2048
  c.scales = (256, 512, 1024)
  c.scale_steps = (300, 200, 150)
  c.num_steps = 100             # at 2048 px
  # The default's beta is for 256 px; the content loss grows with the
  # pixel count, so beta grows with it: 1e5 * (2048 / 256)^2.
  c.style_weight = 6.4e6
  c.log_every = 50
  c.save_every = 0
  return c
