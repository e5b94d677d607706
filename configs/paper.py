"""The settings of Gatys, Ecker & Bethge (2015), Figure 2.

  python -m nst.run --config configs/paper.py \
      --config.content_image=tubingen.jpg --config.style_image=starry_night.jpg

The paper's network: VGG-19 normalised so that each filter's mean activation
is one (``weights = 'normalized'``, computed from the pretrained weights on
first use, see nst/normalize.py) with average pooling. The paper's layer
names are Caffe blobs whose ReLU runs in place, so its ``conv4_2`` is the
rectified response, ``relu4_2`` here. Content relu4_2; style relu1_1 ...
relu5_1 with w_l = 1/5; alpha/beta = 1e-3 (the paper also uses 1e-4);
512 px; L-BFGS from white noise.

With this normalisation (not the paper's own file) the paper's alpha/beta
give mostly the photo; its look came at about 1/100 of them
(``--config.style_weight=1e5``; experiments/fig2 and fig3). In the paper's
formulas alpha/beta is a different balance at every image size and for every
painting: experiments/recipe/paper_balance.py measures it (README, Reproducing the
paper). ``loss_scaling='paper'`` keeps those formulas here; the default's
relative losses do not need the rescaling.

On a CPU an L-BFGS step costs about what an Adam step does
(experiments/cpu_kernels). In a sweep, a batch waits at
every step for its slowest member's line search; on a CPU, sweep L-BFGS with
``--config.sweep.chunk_size=1`` (README, Sweeps).
"""
import pathlib
import runpy

# The default config, loaded by path so this file works from any directory.
_DEFAULT = pathlib.Path(__file__).with_name('default.py')

STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')


def get_config():
  c = runpy.run_path(str(_DEFAULT))['get_config']()
  c.image_size = 512
  c.pooling = 'avg'
  c.weights = 'normalized'
  c.loss_scaling = 'paper'
  c.content_layers = ('relu4_2',)
  c.style_layers = STYLE_LAYERS
  c.style_layer_weights = ()    # w_l = 1/5 each
  c.style_layer_trims = ()      # the whole style image's moments
  c.content_weight = 1.0
  c.style_weight = 1e3          # alpha/beta = 1e-3
  c.optimizer = 'lbfgs'
  c.num_steps = 500
  c.scales = c.scale_steps = ()  # one scale
  c.init = 'noise'
  c.clip_pixels = False
  c.log_every = 25
  c.save_every = 100
  return c
