"""Optax optimisers built from the config.

``adam`` (default): Adam with ``optax.exponential_decay`` -- ``learning_rate``
(2.0 on the 0-255 pixel scale) times ``lr_decay_rate`` (0.94) every
``lr_decay_steps`` (100) steps, staircase -- the schedule of the TensorFlow
script this project started from.

``lbfgs``: L-BFGS with a zoom line search (the paper's optimiser). Its update
needs the objective itself (``value_fn``); ``uses_linesearch`` tells the
update step to pass it.
"""
from __future__ import annotations

import optax

from nst.errors import UserError

OPTIMIZERS = ('adam', 'lbfgs')


def uses_linesearch(name: str) -> bool:
  return name == 'lbfgs'


def make_optimizer(config) -> optax.GradientTransformationExtraArgs:
  if config.optimizer == 'adam':
    schedule = optax.exponential_decay(
        init_value=config.learning_rate,
        transition_steps=config.lr_decay_steps,
        decay_rate=config.lr_decay_rate,
        staircase=True)
    return optax.adam(schedule)
  if config.optimizer == 'lbfgs':
    return optax.lbfgs(memory_size=config.lbfgs_memory)
  raise UserError(f'unknown optimizer {config.optimizer!r}; accepted: '
                  f'{", ".join(OPTIMIZERS)}')
