"""Many configs at once: a sweep as one vmapped, jitted, sharded computation.

A sweep config is a single-run config (every field of configs/default.py)
plus a ``sweep`` section::

  c.sweep.axes.ratio = (1e-4, 1e-3)       # alpha/beta: style_weight is set
                                          # to content_weight / ratio
  c.sweep.axes.style_layers = (('conv1_1',), ('conv1_1', 'conv2_1'))
  c.sweep.axes.content_image = ('photos/',)  # a folder: each image in it
  c.sweep.zip = ()      # groups of axes that vary together, e.g.
                        # (('content_image', 'style_image'),); all other
                        # axes combine as a product
  c.sweep.rows = 'style_layers'   # contact sheet rows and columns
  c.sweep.cols = 'ratio'
  c.sweep.chunk_size = 0          # members per compiled batch; 0 = chosen
                                  # (engine.choose_chunk: all that fit)

An axis is any config field (its values replace the field's) or ``ratio``.
Each combination is a *member*: a complete single-run config, which a run
of its own would turn into the same image.

How it runs:
  1. ``expand``: axes -> members, each checked (``member_configs``) and
     resolved (``spec.resolve``: its content image read at every scale)
     before anything is computed or written;
  2. ``group``: members with equal ``spec.Program`` (network, weights,
     optimiser, scale plan and image shapes...) form a group. Everything
     else -- alpha, beta, tv weight, learning-rate schedule, init image,
     style image, layer set -- is an array, so one compiled step serves the
     whole group. A layer set becomes a weight vector over the union of the
     group's layers (weight 0 = unused);
  3. ``nst.engine`` runs each group in chunks of ``chunk_size`` members
     (0: ``engine.choose_chunk``'s choice, said on the console),
     vmapped and sharded over every device of every process;
     ``nst.runner`` writes what it hands out.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections

from nst import images, report, spec
from nst.errors import UserError

RATIO = 'ratio'  # alpha/beta, the paper's content/style ratio
IMAGE_FIELDS = ('content_image', 'style_image', 'init')


def _freeze(v):
  return tuple(map(_freeze, v)) if isinstance(v, (list, tuple)) else v


def _folder_images(field: str, folder: str) -> tuple[str, ...]:
  try:
    return images.folder_images(folder)
  except UserError as e:
    raise UserError(f'sweep axis {field}: {e}') from None


def _image_values(field: str, values) -> tuple[str, ...]:
  """An image axis: a folder (or a tuple mixing folders and images) lists
  every image in each folder, sorted by name."""
  if isinstance(values, str):
    if not Path(values).expanduser().is_dir():
      raise UserError(f'sweep axis {field}={values!r}: a single string must '
                      'name a folder of images; give a tuple of values '
                      'otherwise')
    values = (values,)
  out = []
  for v in values:
    is_dir = isinstance(v, str) and Path(v).expanduser().is_dir()
    out += _folder_images(field, v) if is_dir else [v]
  return tuple(out)


SWEEP_DEFAULTS = {'axes': {}, 'zip': (), 'rows': '', 'cols': '',
                  'chunk_size': 0}


def settings(config) -> ml_collections.ConfigDict:
  """The config's ``sweep`` section with defaults for what it leaves out."""
  section = config.sweep
  unknown = sorted(set(section.keys()) - set(SWEEP_DEFAULTS))
  if unknown:
    raise UserError(f'unknown sweep field(s) {unknown}; accepted: '
                    f'{", ".join(SWEEP_DEFAULTS)}')
  spec = ml_collections.ConfigDict(
      {k: section.get(k, v) for k, v in SWEEP_DEFAULTS.items()})
  if not isinstance(spec.chunk_size, int) or spec.chunk_size < 0:
    raise UserError(f'sweep.chunk_size={spec.chunk_size!r}: accepted is an '
                    'integer >= 0 (0 = a whole group at once)')
  return spec


def axes(config) -> dict[str, tuple]:
  """The sweep's axes and values, rows axis first, then cols, then by name."""
  spec = settings(config)
  raw = {k: v for k, v in spec.axes.items()}
  if not raw:
    raise UserError('sweep.axes is empty; name at least one config field and '
                    'its values, e.g. sweep.axes.ratio = (1e-4, 1e-3)')
  fields = [k for k in config.keys() if k != 'sweep']
  out = {}
  for name in sorted(raw, key=lambda n: ({spec.rows: 0, spec.cols: 1}.get(
      n, 2), n)):
    values = raw[name]
    if name != RATIO and name not in fields:
      raise UserError(f'sweep axis {name!r} is not a config field; accepted: '
                      f'{RATIO} (alpha/beta) or one of {", ".join(fields)}')
    if name in IMAGE_FIELDS and isinstance(values, (str, list, tuple)):
      values = _image_values(name, values)
    if isinstance(values, (str, bytes)) or not isinstance(values,
                                                          (list, tuple)):
      raise UserError(f'sweep axis {name}={values!r}: give a tuple of values')
    if not values:
      raise UserError(f'sweep axis {name} has no values')
    out[name] = _freeze(values)
  if RATIO in out and 'style_weight' in out:
    raise UserError('sweep axes ratio and style_weight both set style_weight; '
                    'keep one')
  for name in (spec.rows, spec.cols):
    if name and name not in out:
      raise UserError(f'sweep.rows/cols name {name!r}, which is not a sweep '
                      f'axis; accepted: {", ".join(out)} or ""')
  return out


def _factors(spec, ax: dict[str, tuple]) -> list[tuple[str, ...]]:
  """Axes grouped into zipped tuples, in axis order; each a product factor."""
  seen, groups = set(), []
  for group in spec.zip:
    group = tuple(group)
    for name in group:
      if name not in ax:
        raise UserError(f'sweep.zip names {name!r}, which is not a sweep axis;'
                        f' accepted: {", ".join(ax)}')
      if name in seen:
        raise UserError(f'sweep.zip names {name!r} twice')
      seen.add(name)
    lengths = {name: len(ax[name]) for name in group}
    if len(set(lengths.values())) > 1:
      raise UserError(f'sweep.zip group {group} has axes of different lengths '
                      f'{lengths}; zipped axes need equal lengths')
    groups.append(group)
  groups += [(name,) for name in ax if name not in seen]
  order = list(ax)
  return sorted(groups, key=lambda g: min(order.index(n) for n in g))


def _member_config(base, values: dict[str, Any]):
  cfg = ml_collections.ConfigDict(base.to_dict())
  for name, value in values.items():
    if name == RATIO:
      continue
    try:
      cfg[name] = value
    except (TypeError, ValueError) as e:
      kinds = {'int': 'a whole number', 'float': 'a number', 'str': 'text',
               'bool': 'True or False', 'tuple': 'a tuple'}
      want = kinds.get(type(base[name]).__name__) if name in base else None
      raise UserError(
          f'sweep axis {name}={value!r} does not fit the field' + (
              f': accepted is {want} (as {name}={base[name]!r} of the '
              'config)' if want else f': {e}')) from None
  # A swept layer list takes each layer's per-layer values from the base
  # config (a layer the base does not name: an error for weights, no trim,
  # the base's style_loss).
  per_layer = [(f'{kind}_layers', field)
               for kind, fields in spec.PER_LAYER.items() for field in fields]
  for lf, wf in per_layer:
    if lf in values and wf not in values and base[wf]:
      by_name = dict(zip(base[lf], base[wf]))
      missing = [l for l in cfg[lf] if l not in by_name]
      if missing and wf.endswith('_weights'):
        raise UserError(
            f'sweep axis {lf} value {tuple(cfg[lf])} has {missing}, which the '
            f'base {wf} gives no weight; set {wf} = () for equal weights, or '
            f'add them to the base {lf}')
      unnamed = {'style_layer_losses': base.style_loss,
                 'style_layer_trims': 0.0}.get(wf)
      cfg[wf] = tuple(by_name.get(l, unnamed) for l in cfg[lf])
  if RATIO in values:
    ratio = values[RATIO]
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio)
            and ratio > 0):
      raise UserError(f'sweep axis ratio value {ratio!r}: accepted is a '
                      'finite number > 0 (alpha/beta)')
    cfg.style_weight = cfg.content_weight / ratio
  return cfg


def member_configs(config) -> tuple[dict[str, tuple], list[tuple]]:
  """The axes and each member's (coords, values, config), its config
  checked (``spec.check``); no image is read."""
  ax = axes(config)
  base = ml_collections.ConfigDict(
      {k: v for k, v in config.to_dict().items() if k != 'sweep'})
  out = []
  factors = _factors(settings(config), ax)
  for combo in itertools.product(
      *[range(len(ax[group[0]])) for group in factors]):
    coords = {name: i for group, i in zip(factors, combo) for name in group}
    coords = {name: coords[name] for name in ax}
    values = {name: ax[name][i] for name, i in coords.items()}
    try:
      cfg = _member_config(base, values)
      spec.check(cfg)
    except UserError as e:
      raise UserError(f'sweep member {len(out)} ({describe(values)}): '
                      f'{e}') from None
    out.append((coords, values, cfg))
  return ax, out


def resolve_members(entries, load_for: Callable[[Any], Callable] | None = None
                    ) -> list[spec.Member]:
  """``member_configs``'s members, each resolved into a ``spec.Member``
  (its images read with ``load_for(config)``, e.g. ``nst.engine.Loader()
  .images_for``; default ``targets.image_loader``)."""
  from nst import targets  # pylint: disable=import-outside-toplevel
  load_for = load_for or targets.image_loader
  members = []
  for coords, values, cfg in entries:
    try:
      members.append(spec.resolve(cfg, load_for(cfg), len(members), coords,
                                  values))
    except UserError as e:
      raise UserError(f'sweep member {len(members)} ({describe(values)}): '
                      f'{e}') from None
  return members


def expand(config, load_for: Callable[[Any], Callable] | None = None
           ) -> tuple[dict[str, tuple], list[spec.Member]]:
  """The axes and every member, each a checked single-run config resolved
  into a ``spec.Member`` (``member_configs``, then ``resolve_members``)."""
  ax, entries = member_configs(config)
  return ax, resolve_members(entries, load_for)


def group(members: list[spec.Member]) -> list[list[spec.Member]]:
  """Members that share one ``spec.Program`` (one compiled step), in
  member order."""
  groups: dict[spec.Program, list[spec.Member]] = {}
  for m in members:
    groups.setdefault(m.program, []).append(m)
  return list(groups.values())


def describe(values: dict[str, Any]) -> str:
  return ', '.join(f'{k}={report.text(v)}' for k, v in values.items())


# --- Distributed runtime -----------------------------------------------------

def cluster_present() -> bool:
  """True where the environment describes a job of several processes."""
  env = os.environ
  count = lambda var: int(env.get(var, '1') or '1')
  return bool(env.get('JAX_COORDINATOR_ADDRESS') or count('SLURM_NTASKS') > 1
              or count('OMPI_COMM_WORLD_SIZE') > 1
              or ',' in env.get('TPU_WORKER_HOSTNAMES', ''))


def initialize_distributed(mode: str = 'auto') -> bool:
  """Calls ``jax.distributed.initialize()`` for a multi-process job.

  ``mode``: 'auto' (when ``cluster_present()``), 'on' or 'off'. Slurm, Open
  MPI and Cloud TPU describe themselves to JAX; elsewhere set
  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID. Must run before anything touches a device.
  """
  if mode not in ('auto', 'on', 'off'):
    raise UserError(f'--distributed={mode!r}; accepted: auto, on, off')
  if mode == 'off' or (mode == 'auto' and not cluster_present()):
    return False
  env = os.environ
  kwargs = {}
  for var, key, least in (('JAX_NUM_PROCESSES', 'num_processes', 1),
                          ('JAX_PROCESS_ID', 'process_id', 0)):
    if env.get(var):
      value = env[var].strip()
      if not (value.isdigit() and int(value) >= least):
        raise UserError(f'{var}={env[var]!r}: accepted is a whole number '
                        f'>= {least}')
      kwargs[key] = int(value)
  if kwargs.get('process_id', 0) >= kwargs.get('num_processes', math.inf):
    raise UserError(f'JAX_PROCESS_ID={kwargs["process_id"]}: accepted is '
                    f'0 to {kwargs["num_processes"] - 1} (JAX_NUM_PROCESSES='
                    f'{kwargs["num_processes"]})')
  where = env.get('JAX_COORDINATOR_ADDRESS', '')
  # Joining waits (minutes, by JAX's timeout) for every process to start:
  # say so, or a process that never comes looks like a hang.
  print(f'joining a job of {kwargs.get("num_processes", "all its")} '
        f'processes as process {kwargs.get("process_id", "?")}'
        + (f' (coordinator {where})' if where else '') + '; waiting until '
        'every one has started', flush=True)
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(
        f'--distributed={mode}: could not join a multi-process job ({first}); '
        'run under Slurm, Open MPI or a Cloud TPU pod, or set '
        'JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or '
        + ('drop --distributed=on' if mode == 'on' else
           'pass --distributed=off') + ' for one process') from None
  return True
