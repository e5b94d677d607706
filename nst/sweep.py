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
  c.sweep.chunk_size = 0          # members per compiled batch; 0 = all

An axis is any config field (its values replace the field's) or ``ratio``.
Each combination is a *member*: a complete single-run config, which
``nst.stylize.stylize`` would turn into the same image.

How it runs:
  1. ``expand``: axes -> members, validated before anything is computed;
  2. ``group``: members that share one program (network, pooling, weights,
     optimiser, steps, image shape) form a group. Everything else -- alpha,
     beta, tv weight, learning-rate schedule, init image, style image, layer
     set -- is an array, so one compiled step serves the whole group. A layer
     set becomes a weight vector over the union of the group's layers
     (weight 0 = unused);
  3. a group runs in chunks of ``chunk_size`` members (rounded up to a
     multiple of the device count) whose member axis is sharded over every
     device of every host: a ``Mesh`` with one axis, ``member``, and
     ``NamedSharding``. The update is ``stylize.make_update`` under
     ``jax.vmap``, jitted, with the images and optimiser states donated;
  4. each host writes the images of the members on its own devices; process
     0 writes ``results.csv``, ``metrics.jsonl``, the contact sheets and
     ``index.html`` (``nst.report``).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst import (checkpoint, colour, images, optim, report, stylize, vgg,
                 weights)
from nst.errors import Stopped, UserError

RATIO = 'ratio'  # alpha/beta, the paper's content/style ratio
IMAGE_FIELDS = ('content_image', 'style_image', 'init')
# Fields that change the compiled program or the array shapes: members that
# differ in any of them (or in the content image's shape) run separately.
PROGRAM_FIELDS = ('network', 'pooling', 'compute_dtype', 'remat',
                  'convolution', 'weights',
                  'optimizer', 'lbfgs_memory', 'clip_pixels', 'num_steps',
                  'log_every', 'style_loss', 'scales', 'scale_steps')


@dataclasses.dataclass
class Member:
  index: int
  coords: dict[str, int]    # axis -> position in that axis's values
  values: dict[str, Any]    # axis -> value
  config: ml_collections.ConfigDict


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
      raise UserError(f'sweep axis {name}={value!r} does not fit the field: '
                      f'{e}') from None
  for kind in ('content', 'style'):
    lf, wf = f'{kind}_layers', f'{kind}_layer_weights'
    if lf in values and wf not in values and base[wf]:
      # A layer set keeps each layer's weight from the base config.
      by_name = dict(zip(base[lf], base[wf]))
      missing = [l for l in cfg[lf] if l not in by_name]
      if missing:
        raise UserError(
            f'sweep axis {lf} value {tuple(cfg[lf])} has {missing}, which the '
            f'base {wf} gives no weight; set {wf} = () for equal weights, or '
            f'add them to the base {lf}')
      cfg[wf] = tuple(by_name[l] for l in cfg[lf])
  if RATIO in values:
    ratio = values[RATIO]
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio)
            and ratio > 0):
      raise UserError(f'sweep axis ratio value {ratio!r}: accepted is a '
                      'finite number > 0 (alpha/beta)')
    cfg.style_weight = cfg.content_weight / ratio
  return cfg


def expand(config) -> tuple[dict[str, tuple], list[Member]]:
  """The axes and every member, each a checked single-run config."""
  ax = axes(config)
  base = ml_collections.ConfigDict(
      {k: v for k, v in config.to_dict().items() if k != 'sweep'})
  members = []
  factors = _factors(settings(config), ax)
  for combo in itertools.product(
      *[range(len(ax[group[0]])) for group in factors]):
    coords = {name: i for group, i in zip(factors, combo) for name in group}
    coords = {name: coords[name] for name in ax}
    values = {name: ax[name][i] for name, i in coords.items()}
    try:
      cfg = _member_config(base, values)
      stylize.check_config(cfg)
    except UserError as e:
      raise UserError(f'sweep member {len(members)} '
                      f'({describe(values)}): {e}') from None
    members.append(Member(len(members), coords, values, cfg))
  return ax, members


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
  if env.get('JAX_NUM_PROCESSES'):
    kwargs['num_processes'] = int(env['JAX_NUM_PROCESSES'])
  if env.get('JAX_PROCESS_ID'):
    kwargs['process_id'] = int(env['JAX_PROCESS_ID'])
  jax.distributed.initialize(**kwargs)
  return True


def member_mesh(devices=None) -> Mesh:
  """A one-axis mesh, ``member``, over every device of every process."""
  return Mesh(np.asarray(devices or jax.devices()), ('member',))


def _put(make: Callable[[int], Any], n: int, sharding: NamedSharding):
  """A pytree of global arrays whose slot ``j`` is ``make(j)``.

  Each process computes only the slots that live on its own devices.
  """
  local = sorted({j for index in
                  sharding.addressable_devices_indices_map((n,)).values()
                  for j in range(n)[index[0]]})
  trees = {j: jax.device_get(make(j)) for j in local}
  treedef = jax.tree.structure(trees[local[0]])
  leaves = {j: jax.tree.leaves(t) for j, t in trees.items()}

  def leaf(k):
    shape = (n,) + np.shape(leaves[local[0]][k])
    return jax.make_array_from_callback(
        shape, sharding, lambda index: np.stack(
            [np.asarray(leaves[j][k]) for j in range(n)[index[0]]]))

  return jax.tree.unflatten(treedef,
                            [leaf(k) for k in range(len(leaves[local[0]]))])


def _replicate(tree, sharding: NamedSharding):
  return jax.tree.map(lambda a: jax.make_array_from_callback(
      np.shape(a), sharding, lambda index: np.asarray(a)[index]), tree)


def _gather(tree):
  """Every process gets the full (host) value of member-sharded arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _any_process(flag: bool) -> bool:
  """``flag`` or'ed over the processes: all of them stop after the same
  step, whichever was asked (one that stopped alone would leave the others
  waiting in its checkpoint's collectives). Costs a collective, and so a
  wait for the step in flight, per step of a multi-process sweep."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _local_slots(array) -> dict[int, np.ndarray]:
  """{slot: value} for the slots of ``array`` held by this process."""
  out = {}
  for shard in array.addressable_shards:
    data = np.asarray(shard.data)
    for j, value in zip(range(array.shape[0])[shard.index[0]], data):
      out[j] = value
  return out


# --- Running -----------------------------------------------------------------

def _union(layer_sets, network) -> tuple[str, ...]:
  wanted = set(itertools.chain.from_iterable(layer_sets))
  return tuple(l for l in vgg.layer_names(network) if l in wanted)


class Loader:
  """Loads images and weights once each."""

  def __init__(self):
    self._images, self._params = {}, {}

  def image(self, spec: str, size: int, **options) -> np.ndarray:
    key = spec, size, tuple(sorted(options.items()))
    if key not in self._images:
      self._images[key] = images.load(spec, size, **options)
    return self._images[key]

  def images_for(self, config) -> Callable[[str, int], np.ndarray]:
    """``image`` with ``config``'s image options (a ``load`` for
    ``stylize.load_inputs``)."""
    return functools.partial(self.image, **stylize.image_options(config))

  def params(self, spec: str, network: str):
    if (spec, network) not in self._params:
      self._params[spec, network] = weights.load(spec, network)
    return self._params[spec, network]


def group(members: list[Member], loader: Loader) -> list[list[Member]]:
  """Members that can share one compiled program, in member order."""
  groups: dict[tuple, list[Member]] = {}
  for m in members:
    c = m.config
    shapes = []
    try:
      for size, _ in stylize.scale_plan(c):
        content = loader.images_for(c)(c.content_image, size)
        stylize.check_content_shape(c, content.shape, size)
        shapes.append(content.shape)
    except UserError as e:
      raise UserError(f'sweep member {m.index} ({describe(m.values)}): '
                      f'{e}') from None
    key = tuple(_freeze(c[f]) for f in PROGRAM_FIELDS) + (
        tuple(shapes), stylize.regions(c))
    groups.setdefault(key, []).append(m)
  return list(groups.values())


@dataclasses.dataclass
class Result:
  member: Member
  metrics: dict[str, float]
  status: str      # 'ok', or 'diverged' (a non-finite loss was seen)
  wall_s: float    # of the member's chunk, compilation included
  steps_per_s: float  # of the chunk after its first step (compiled)
  group: int
  chunk: int
  image: str       # relative to the workdir; '' if diverged
  written: bool    # by this process (the one holding the member's image)


def image_name(member: Member) -> str:
  return f'members/{member.index:04d}.png'


def result_name(member: Member) -> str:
  return f'members/{member.index:04d}.result.json'


def save_result(workdir: Path, r: Result) -> None:
  """The record of a finished member, which ``--resume`` keeps."""
  record = {'metrics': r.metrics, 'status': r.status, 'wall_s': r.wall_s,
            'steps_per_s': r.steps_per_s, 'group': r.group,
            'chunk': r.chunk, 'image': r.image}
  images.write_atomic(workdir / result_name(r.member),
                      json.dumps(record).encode())


def finished(workdir: Path, members: list[Member]) -> dict[int, Result]:
  """{index: result} of the members a stopped sweep finished: those with a
  readable record (and their image, unless they diverged)."""
  out = {}
  for m in members:
    try:
      r = json.loads((workdir / result_name(m)).read_text())
      result = Result(m, r['metrics'], r['status'], r['wall_s'],
                      r['steps_per_s'], r['group'], r['chunk'], r['image'],
                      written=bool(r['image']))
    except (OSError, ValueError, KeyError, TypeError):
      continue
    if not result.image or (workdir / result.image).is_file():
      out[m.index] = result
  return out


def _compile(model, c, mesh):
  """The group's batched step, optimiser init and evaluation."""
  per_member = NamedSharding(mesh, PartitionSpec('member'))
  replicated = NamedSharding(mesh, PartitionSpec())
  update = stylize.make_update(model, optimizer=c.optimizer,
                               lbfgs_memory=c.lbfgs_memory,
                               clip=c.clip_pixels)
  step = jax.jit(jax.vmap(update, in_axes=(None, 0, 0, 0, 0)),
                 in_shardings=(replicated,) + (per_member,) * 4,
                 out_shardings=per_member, donate_argnums=(3, 4))
  init = jax.jit(jax.vmap(lambda hp, x: stylize.init_state(
      c.optimizer, c.lbfgs_memory, hp, x)), out_shardings=per_member)
  evaluate = jax.jit(jax.vmap(
      lambda p, t, hp, x, s: stylize.objective(
          model, p, t, stylize.output(hp, x, s)), in_axes=(None, 0, 0, 0, 0)),
                     out_shardings=per_member)
  finish = jax.jit(jax.vmap(stylize.output), out_shardings=per_member)
  return step, init, evaluate, finish, per_member, replicated


def batching_note(optimizer: str, per_device: int, devices: int,
                  backend: str) -> str | None:
  """A hint when a batch is likely slower than its members one at a time:
  L-BFGS under ``vmap`` evaluates every member as often as the slowest
  member's line search needs, at each step, and a CPU gains too little
  from batching to make up for it (measured in README, Sweeps)."""
  if not (optim.uses_linesearch(optimizer) and per_device > 1
          and backend == 'cpu'):
    return None
  return (f'note: {per_device} L-BFGS members per device in one batch wait '
          "at every step for the slowest member's line search; on a CPU, "
          f'--config.sweep.chunk_size={devices} (one member per device) '
          'is usually faster')


def run_group(members: list[Member], *, loader: Loader, mesh: Mesh,
              chunk_size: int = 0, group_index: int = 0,
              on_log: Callable[[dict], None] | None = None,
              on_image: Callable[[Member, np.ndarray], None] | None = None,
              on_result: Callable[[Result], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              on_stop: Callable[..., None] | None = None,
              resume: checkpoint.Checkpoint | None = None
              ) -> list[Result]:
  """Optimises every member of one group; returns their results.

  ``on_log(row)`` gets one row per member and log step (process 0 only);
  ``on_image(member, image)`` is called by the process that holds the
  member's final image (on its devices); ``on_result(result)`` for each
  member when its chunk is done. ``should_stop()`` is asked after every
  step: yes (from any process: all stop after that step) calls
  ``on_stop(chunk, step, image, state, finite)`` with the chunk's host
  arrays (every process), then raises ``Stopped``. ``resume``,
  a checkpoint of such a chunk (``extra['members']``: its member indices),
  continues that chunk from its step.
  """
  c = members[0].config
  model = stylize.make_model(c)
  content_layers = _union([m.config.content_layers for m in members],
                          c.network)
  style_layers = _union([m.config.style_layers for m in members], c.network)
  params = stylize.prepare_params(
      c, loader.params(c.weights, c.network), content_layers + style_layers,
      max(stylize.largest_side(m.config) for m in members))
  step, init, evaluate, finish, per_member, replicated = _compile(
      model, c, mesh)
  device_params = _replicate(params, replicated)
  plan = stylize.scale_plan(c)
  total_steps = sum(n for _, n in plan)

  devices = mesh.devices.size
  size = min(chunk_size or len(members), len(members))
  size = -(-size // devices) * devices
  chunks = [members[k:k + size] for k in range(0, len(members), size)]
  note = batching_note(c.optimizer, size // devices, devices,
                       jax.default_backend())
  if note and jax.process_index() == 0:
    print(note, flush=True)
  results = []
  for chunk_index, chunk in enumerate(chunks):
    slots = chunk + [chunk[-1]] * (size - len(chunk))  # pad with copies
    by_index = {m.index: m for m in chunk}
    start = time.perf_counter()
    finite = np.ones(size, bool)
    resumed = resume if resume is not None and list(
        resume.extra.get('members', ())) == [m.index for m in chunk] else None
    if resumed:
      finite[:] = resumed.extra['finite']
    first_step = resumed.done if resumed else 0
    last = {}
    after_first = None
    image = state = None
    done = 0

    def log(i, scale, targets, hparams, image, state):
      total, parts = _gather(evaluate(stylize.forward_params(device_params),
                                      targets, hparams, image,
                                      state))
      finite[:] &= np.isfinite(total)
      for j, m in enumerate(chunk):
        last[j] = {'member': m.index, 'step': i, 'size': scale,
                   'loss': float(total[j]),
                   **{k: float(v[j]) for k, v in parts.items()}}
        if on_log:
          on_log(last[j])
      if jax.process_index() == 0:
        real = total[:len(chunk)]
        ok = real[np.isfinite(real)]
        summary = (f'loss median {np.median(ok):.4e} (min {ok.min():.4e}, max '
                   f'{ok.max():.4e})' if ok.size else 'no finite loss')
        ran = i - first_step - 1  # since the first (compiling) step
        speed = (f'  {ran / (time.perf_counter() - after_first):.2f} '
                 'steps/s' if after_first and ran > 0 else '')
        where = f' ({scale} px)' if len(plan) > 1 else ''
        print(f'group {group_index + 1} chunk {chunk_index + 1}/{len(chunks)}'
              f' ({len(chunk)} members) step {i:5d}/{total_steps}{where}  '
              f'{summary}{speed}', flush=True)

    for scale, steps in plan:
      if done + steps < first_step:  # finished before the checkpoint
        done += steps
        continue

      @functools.cache  # a padded slot reuses its member's inputs
      def inputs(index, scale=scale):
        m = by_index[index].config
        loaded = stylize.load_inputs(m, scale, loader.images_for(m))
        targets = stylize.make_targets(
            m, model, params, loaded, content_layers=content_layers,
            style_layers=style_layers, area_ratio=(m.image_size / scale) ** 2)
        return loaded, targets

      targets, hparams = _put(lambda j: (inputs(slots[j].index)[1],
                                         optim.hyperparams(slots[j].config)),
                              size, per_member)
      first = done
      if done < first_step:  # the checkpoint's step is in this scale
        shape = inputs(slots[0].index)[0].content.shape
        if resumed.image.shape != (size, *shape):
          raise UserError(f'the checkpoint holds images of '
                          f'{resumed.image.shape}; this chunk has '
                          f'{(size, *shape)} at step {first_step}')
        image = _put(lambda j: resumed.image[j], size, per_member)
        host = checkpoint.fit_state(resumed, jax.eval_shape(init, hparams,
                                                            image))
        state = _put(lambda j: jax.tree.map(lambda v: v[j], host), size,
                     per_member)
        first = first_step
      else:
        if image is None:
          image = _put(lambda j: stylize.init_image(
              slots[j].config, inputs(slots[j].index)[0].content), size,
                       per_member)
        else:
          shape = inputs(slots[0].index)[0].content.shape
          image = jax.jit(
              jax.vmap(lambda x: jax.image.resize(x, shape, 'cubic')),
              out_shardings=per_member)(finish(hparams, image, state))
          image = image + _put(lambda j: stylize.scale_detail(
              slots[j].config, inputs(slots[j].index)[0].content,
              coarse(slots[j].index)[0].content), size, per_member)
        state = init(hparams, image)
      if first == 0:
        log(0, scale, targets, hparams, image, state)
      for i in range(first + 1, done + steps + 1):
        image, state, _ = step(device_params, targets, hparams, image, state)
        if after_first is None:  # keep compilation out of the steps/s
          jax.block_until_ready(image)
          after_first = time.perf_counter()
        if c.log_every and i % c.log_every == 0 or i == done + steps:
          log(i, scale, targets, hparams, image, state)
        # (At the chunk's last step there is nothing left to keep: finish.)
        if i < total_steps and should_stop and _any_process(should_stop()):
          if on_stop:
            on_stop(chunk, i, *_gather((image, state)), finite.copy())
          raise Stopped(i)
      done += steps
      coarse = inputs  # the next scale adds the photo's finer detail
    out = finish(hparams, image, state)
    jax.block_until_ready(out)
    end = time.perf_counter()
    wall = end - start
    ran = total_steps - first_step - 1
    speed = ran / (end - after_first) if ran > 0 else float('nan')

    # A diverged member's image is not written (its cell stays empty).
    local = {j: v for j, v in _local_slots(out).items()
             if j < len(chunk) and finite[j]}
    for j, value in local.items():
      if on_image:
        member = chunk[j]
        on_image(member, colour.restore(member.config.preserve_colour, value,
                                        inputs(member.index)[0].original))
    for j, m in enumerate(chunk):
      metrics = {k: v for k, v in last[j].items() if k != 'member'}
      results.append(Result(m, metrics, 'ok' if finite[j] else 'diverged',
                            wall, speed, group_index, chunk_index,
                            image_name(m) if finite[j] else '',
                            written=j in local))
      if on_result:
        on_result(results[-1])
  return results


def run(config, workdir: Path, devices=None, resume: bool = False,
        should_stop: Callable[[], bool] | None = None) -> list[Result]:
  """Runs the sweep ``config`` into ``workdir``; returns the member results.

  ``devices`` (default: all of them, on every process) carry the member axis.
  The caller checks that ``workdir`` may be written (``nst.run`` does).
  With ``resume``, members that a stopped run of the same sweep finished
  (``members/NNNN.result.json``) are kept, the chunk it stopped in
  continues from its ``checkpoint.npz``, and the others run.
  ``should_stop()`` is asked after every step (see ``run_group``); when it
  says yes the chunk in progress is checkpointed.
  """
  ax, members = expand(config)
  spec = settings(config)
  loader = Loader()
  kept = finished(workdir, members) if resume else {}
  groups = group([m for m in members if m.index not in kept], loader)
  path = workdir / checkpoint.NAME
  pending = (checkpoint.load(path) if resume and path.is_file() else None)
  in_pending = (set(pending.extra.get('members', np.zeros(0)).tolist())
                if pending else set())
  mesh = member_mesh(devices)
  lead = jax.process_index() == 0
  if jax.process_count() > 1:  # nobody writes before everyone has checked
    multihost_utils.sync_global_devices('nst.sweep: workdir checked')
  (workdir / 'members').mkdir(parents=True, exist_ok=True)
  if lead:
    if resume:  # rows after the checkpoint are written again
      checkpoint.keep_rows(
          workdir / 'metrics.jsonl', lambda r: r['member'] in kept or (
              r['member'] in in_pending and r['step'] <= pending.done))
    else:
      images.write_atomic(workdir / 'config.json',
                          config.to_json(indent=2).encode())
    print(f'{len(members)} members in {len(groups)} group(s) on '
          f'{mesh.devices.size} device(s), {jax.process_count()} process(es) '
          f'-> {workdir}' + (f' ({len(kept)} finished before, kept)'
                             if resume else ''), flush=True)
  metrics_file = open(workdir / 'metrics.jsonl', 'a') if lead else None

  def on_log(row):
    if metrics_file:
      metrics_file.write(json.dumps(row) + '\n')

  def on_image(member, value):
    path = workdir / image_name(member)
    images.save(path, value)
    images.write_atomic(path.with_suffix('.json'),
                        member.config.to_json(indent=2).encode())

  def on_result(result):
    if metrics_file:
      metrics_file.flush()
    if lead:
      save_result(workdir, result)

  def on_stop(chunk, step, image, state, finite):
    """Checkpoints the chunk in progress (``--resume`` continues it)."""
    if metrics_file:
      metrics_file.flush()
    if lead:
      checkpoint.save(path, step, image, state, config.to_json(), extra={
          'members': np.array([m.index for m in chunk]), 'finite': finite})

  results = list(kept.values())
  try:
    for g, group_members in enumerate(groups):
      results += run_group(group_members, loader=loader, mesh=mesh,
                           chunk_size=spec.chunk_size, group_index=g,
                           on_log=on_log, on_image=on_image,
                           on_result=on_result, should_stop=should_stop,
                           on_stop=on_stop, resume=pending)
  finally:
    if metrics_file:
      metrics_file.close()
  if jax.process_count() > 1:  # every image is written before the sheets
    multihost_utils.sync_global_devices('nst.sweep: members written')
  if lead:
    results.sort(key=lambda r: r.member.index)
    report.write_all(workdir, ax, results, rows=spec.rows, cols=spec.cols,
                     zipped=spec.zip)
    path.unlink(missing_ok=True)  # a stopped chunk's checkpoint, now used
    print(f'wrote {workdir / "results.csv"} and {workdir / "index.html"}',
          flush=True)
  return results
