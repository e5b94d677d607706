"""The settings of Gatys, Ecker & Bethge (2015), Figure 2.

  python -m nst.run --config configs/paper.py \
      --config.content_image=tubingen.jpg --config.style_image=starry_night.jpg

512 px, L-BFGS from white noise, average pooling, content conv4_2, style
conv1_1 ... conv5_1 with w_l = 1/5, alpha/beta = 1e-3 (the paper also uses
1e-4). The paper's VGG-19 was additionally normalised (mean activation one per
filter); this config uses the plain pretrained weights, so conv4_1 dominates
the style loss (see configs/default.py).

Slow on a CPU: XLA:CPU runs the convolutions inside the line search's loop
about 3x slower than outside it, so an L-BFGS step costs about 4 Adam steps
here (measured 0.3 steps/s at 256x192 px on 2 cores). A GPU does not have
this problem; on a CPU, Adam (configs/default.py) gets further per second.
"""
import pathlib
import runpy

# The default config, loaded by path so this file works from any directory.
_DEFAULT = pathlib.Path(__file__).with_name('default.py')


def get_config():
  c = runpy.run_path(str(_DEFAULT))['get_config']()
  c.image_size = 512
  c.pooling = 'avg'
  c.style_layer_weights = ()    # w_l = 1/5 each
  c.content_weight = 1.0
  c.style_weight = 1e3          # alpha/beta = 1e-3
  c.optimizer = 'lbfgs'
  c.num_steps = 500
  c.init = 'noise'
  c.clip_pixels = False
  c.log_every = 25
  c.save_every = 100
  return c
