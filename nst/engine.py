"""The one loop: a group of members over the scale plan.

A single run is a group of one member; a sweep is several groups (members
grouped by ``spec.Program``, ``nst.sweep.group``). ``run_group`` runs a
group in chunks of ``chunk_size`` members (rounded up to a multiple of the
device count) whose member axis is sharded over every device of every
process (a ``Mesh`` with one axis, ``member``). At each scale of the
program's plan a chunk is initialised (the member's init image, or the
coarser scale's output resized plus the photo's finer detail), stepped,
logged, saved, checkpointed and, when asked, stopped; ``resume`` continues
a stopped chunk from its checkpoint, bit for bit.

The update is ``nst.step.make_update`` under ``jax.vmap``; a chunk of one
member on one device runs it unbatched (the same jitted function as a
plain single run). Everything the loop hands out goes through
``Callbacks`` (``nst.runner.Writer`` writes it into a run's folder; the
default keeps nothing), on the process that holds the data.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst import backend, checkpoint, colour, images, memory, optim
from nst import progress, sharding, spec, step, targets, vgg, weights
from nst.errors import Diverged, Stopped, UserError
from nst.spec import Member


@dataclasses.dataclass
class Result:
  member: Member
  metrics: dict[str, float]  # the last log step's: step, size, losses
  status: str        # 'ok', or 'diverged' (a non-finite loss was seen)
  wall_s: float      # of the member's chunk, compilation included
  steps_per_s: float  # of the chunk's steps, each scale's first (which
                      # compiles) left out
  group: int
  chunk: int
  written: bool      # its image went to ``Callbacks.image`` on this process
  last_finite: tuple[int, np.ndarray] | None = None  # diverged: the output
                     # of the latest log step whose loss was finite
  image: str = ''    # where a writer put its image (workdir-relative)


class Callbacks:
  """What the loop hands out. Each method is a no-op here; override what
  you need. Images are float (H, W, 3) in the Caffe convention, colours
  restored, at the scale's size."""

  def progress(self, line: str) -> None:
    """A line for the console (process 0)."""

  def log(self, row: dict[str, Any]) -> None:
    """One member's losses at a log step (process 0): member, step, size,
    loss, content, style, tv, evals_per_step (after step 0), steps_per_s,
    time_s (since the chunk started) and left_s (the run's estimated time
    left; None until a scale's rate is measured)."""

  def save(self, member: Member, step_: int, image: np.ndarray) -> None:
    """The output after ``step_`` steps (every ``save_every`` steps, and
    when the run is stopped), by the process holding the member."""

  def checkpoint(self, ckpt: checkpoint.Checkpoint) -> None:
    """A chunk's state to continue from (every ``checkpoint_every`` steps
    while any member is finite, and when stopped); every process gets it."""

  def image(self, member: Member, image: np.ndarray) -> None:
    """A finite member's final output, by the process holding it."""

  def result(self, result: Result) -> None:
    """A member's result when its chunk is done (every process)."""


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
    ``targets.load_inputs``)."""
    return functools.partial(self.image, **targets.image_options(config))

  def params(self, spec: str, network: str):
    if (spec, network) not in self._params:
      self._params[spec, network] = weights.load(spec, network)
    return self._params[spec, network]


# --- Compiled functions ------------------------------------------------------

def over_members(fn: Callable, single: bool, shared_first: bool):
  """``fn`` of one member lifted to a leading member axis: ``jax.vmap``,
  or for a batch of one, the member taken out and put back (the same
  computation as ``fn`` itself). ``shared_first``: the first argument (the
  network's params) has no member axis."""
  if not single:
    return jax.vmap(fn, in_axes=(None, 0, 0, 0, 0) if shared_first else 0)
  one = lambda tree: jax.tree.map(lambda v: v[0], tree)
  many = lambda tree: jax.tree.map(lambda v: v[None], tree)
  if shared_first:
    return lambda p, *args: many(fn(p, *one(args)))
  return lambda *args: many(fn(*one(args)))


class Compiled(NamedTuple):
  """A chunk's jitted functions (``compiled``) and its two shardings."""
  step: Callable       # (params, targets, hparams, image, state) -> (image,
                       # state, metrics); donates image and state
  init: Callable       # (hparams, image) -> optimiser state
  evaluate: Callable   # (params, targets, hparams, image, state) -> losses
  finish: Callable     # (hparams, image, state) -> the output image
  per_member: NamedSharding
  replicated: NamedSharding


@functools.cache
def compiled(update: spec.Update, mesh: Mesh, batch: int) -> Compiled:
  """The chunk's step, state init, evaluation and output for ``batch``
  members on ``mesh``: jitted once per network and optimiser (``update``),
  mesh and batch, for every chunk and group that shares them."""
  program = update
  per_member = NamedSharding(mesh, PartitionSpec('member'))
  replicated = NamedSharding(mesh, PartitionSpec())
  single = batch == 1 and mesh.devices.size == 1
  lift = functools.partial(over_members, single=single)
  step_ = jax.jit(lift(step.make_update(program, per_device(batch, mesh)),
                       shared_first=True),
                  in_shardings=(replicated,) + (per_member,) * 4,
                  out_shardings=per_member, donate_argnums=(3, 4))
  init = jax.jit(lift(functools.partial(step.init_state, program),
                      shared_first=False), out_shardings=per_member)
  # (Run with XLA's own convolutions, ``targets.forward_params``.)
  evaluate = jax.jit(lift(functools.partial(step.evaluate, program),
                          shared_first=True), out_shardings=per_member)
  finish = jax.jit(lift(step.output, shared_first=False),
                   out_shardings=per_member)
  return Compiled(step_, init, evaluate, finish, per_member, replicated)


def per_device(batch: int, mesh: Mesh) -> int:
  """The members of a chunk of ``batch`` that each device of ``mesh`` runs
  (``whole_devices`` makes it a whole number)."""
  return max(1, batch // mesh.devices.size)


def choose_chunk(configs, devices: int, *, memory_check: bool = True
                 ) -> tuple[int, str]:
  """``sweep.chunk_size = 0``: the members per chunk for a sweep of
  ``configs`` on ``devices`` devices, and why, in one line.

  All of them, unless the memory available now holds fewer (the most that
  fit, a multiple of ``devices``) or the optimiser's steps differ in cost
  between members (a line search, ``lbfgs_zoom``) and the backend is a
  CPU: a batch then runs every member as long as its slowest member's
  search, at every step, and one member per device is faster (README,
  Sweeps)."""
  n = len(configs)
  every = whole_devices(n, devices)
  searching = [c.optimizer for c in configs
               if optim.uses_linesearch(c.optimizer)]
  if searching and jax.default_backend() == 'cpu':
    return devices, (
        f'sweep: chunks of {devices} (one member per device): '
        f"{searching[0]}'s line search would make a batch wait for its "
        'slowest member at every step, which on a CPU costs more than '
        'batching gains')
  if not memory_check:
    return every, f'sweep: {everyone(n)} (no memory check)'
  size, est, free = memory.largest_chunk(configs, devices=devices)
  if size is None:  # memory.check says what would fit
    return devices, f'sweep: chunks of {devices}: not even these fit'
  where = 'device' if 'device' in free and not est.cpu else 'host'
  need = est.on_device if where == 'device' else est.on_host
  have = (f'an estimated {memory.size_text(need)} of the '
          f'{memory.size_text(free[where][0])} available'
          if where in free else 'no memory limit known')
  if size >= every:
    return every, f'sweep: {everyone(n)} ({have})'
  return size, (f'sweep: chunks of {size} of the {n} members, the most '
                f'that fit ({have})')


def everyone(n: int) -> str:
  """How ``choose_chunk`` says that a sweep's ``n`` members run as one
  batch."""
  return 'its one member' if n == 1 else f'all {n} members in one batch'


def chunk_members(members: list[Member], chunk_size: int, devices: int,
                  kept=()) -> tuple[list[list[Member]], int]:
  """A group's chunks, in member order, and their size: ``chunk_size``
  members (0 = all), rounded up to a multiple of ``devices`` (a short
  chunk is padded to it). Members whose index is in ``kept`` (finished by
  a stopped run) are in no chunk; the size is still the whole group's, so
  a resumed run makes the stopped run's chunks when its chunk size is the
  same, and runs no finished member again when it is not."""
  size = min(chunk_size or len(members), len(members))
  size = whole_devices(size, devices)
  todo = [m for m in members if m.index not in kept]
  return [todo[k:k + size] for k in range(0, len(todo), size)], size


def whole_devices(n: int, devices: int) -> int:
  """``n`` members rounded up to a multiple of ``devices`` (each device
  runs the same number; a short chunk is padded)."""
  return -(-n // devices) * devices


def union_layers(layer_sets, network) -> tuple[str, ...]:
  """The layers of any of ``layer_sets``, in network order."""
  wanted = set(itertools.chain.from_iterable(layer_sets))
  return tuple(l for l in vgg.layer_names(network) if l in wanted)


def _finite(tree) -> bool:
  return all(np.isfinite(v).all() for v in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(v).dtype, np.floating))


# --- The loop ----------------------------------------------------------------

@dataclasses.dataclass
class Group:
  """What every chunk of one group shares; set once by ``run_group``."""
  program: spec.Program
  loader: Loader
  model: Any
  params: Any            # host params for the targets (``make_targets``)
  device_params: Any     # replicated, for the step
  eval_params: Any       # XLA's own convolutions: targets, logged losses
  content_layers: tuple[str, ...]
  style_layers: tuple[str, ...]
  fns: Compiled
  size: int              # slots per chunk
  chunks: int            # chunks in this group
  chunks_after: int      # chunks of later groups still to run
  index: int
  callbacks: Callbacks
  should_stop: Callable[[], bool] | None
  lead: bool             # process 0: logs and prints


@dataclasses.dataclass
class Clock:
  """A chunk's timings: for the logged speeds and the time left."""
  start: float
  first: float | None = None   # when its first step (compiled) was done
  scale_start: float = 0.0     # when the latest scale's start began
  paused: float = 0.0          # seconds of later scales' starts (targets,
  paused_steps: int = 0        # compiling, first step) and their steps
  log: float | None = None     # the latest log step's time ...
  log_step: int = 0            # ... and number
  evals: tuple = (-1, None)    # (log step, each slot's evaluations then)
  history: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Chunk:
  """The state of the chunk being run: the loop's stages read and update
  it, and nothing else."""
  index: int
  members: list[Member]        # in member order
  slots: list[Member]          # ``members`` padded with copies to ``size``
  finite: np.ndarray           # (size,): no non-finite loss seen yet
  resumed: checkpoint.Checkpoint | None
  first_step: int              # the step it starts after (resumed: > 0)
  clock: Clock
  scale: int = 0
  done: int = 0                # steps of the scales before this one
  image: Any = None            # (size, H, W, 3) on the mesh
  state: Any = None            # the optimiser's state, on the mesh
  hparams: Any = None
  targets: Any = None
  inputs: Callable | None = None   # member index -> (Inputs, Targets) here
  coarse: Callable | None = None   # ... at the scale before
  last: dict = dataclasses.field(default_factory=dict)   # slot -> log row
  last_finite: dict = dataclasses.field(default_factory=dict)
  last_out: tuple | None = None    # (step, output, inputs) of the last log
  boundary: tuple | None = None    # a scale's start: (step, image, state,
                                   # inputs) of the scale before, while the
                                   # new one compiles
  diverged: bool = False       # every member did: nothing left to run


def run_group(members: list[Member], *, loader: Loader, mesh: Mesh,
              chunk_size: int = 0, group_index: int = 0,
              callbacks: Callbacks | None = None,
              should_stop: Callable[[], bool] | None = None,
              resume: checkpoint.Checkpoint | None = None,
              kept: dict[int, Result] | None = None,
              chunks_after: int = 0) -> list[Result]:
  """Optimises every member of one group (one ``Program``); returns their
  results, in member order. A member with a result in ``kept`` (finished
  by an earlier, stopped run) is not run again: its kept result is
  returned, and the chunks are cut from the other members
  (``chunk_members``), numbered on from the kept ones'.

  ``should_stop()`` is asked after every step: yes (from any process: all
  stop after that step) checkpoints the chunk, saves each member's output
  so far, and raises ``Stopped``. ``resume``, a checkpoint of such a chunk
  (``extra['members']``: its member indices), continues that chunk from
  its step. A member whose loss becomes non-finite is marked 'diverged';
  a chunk whose members all diverged ends early. ``chunks_after``: the
  chunks of later groups still to run (the time left counts them).
  """
  kept = kept or {}
  chunks, size = chunk_members(members, chunk_size, mesh.devices.size, kept)
  results = {m.index: kept[m.index] for m in members if m.index in kept}
  first = 1 + max((r.chunk for r in results.values()), default=-1)
  group = _group(members, loader, mesh, size, first + len(chunks),
                 group_index, callbacks or Callbacks(), should_stop,
                 chunks_after)
  for index, chunk_list in enumerate(chunks, start=first):
    chunk = _start_chunk(group, index, chunk_list, resume)
    for scale, (shape, steps) in enumerate(group.program.plan):
      if chunk.done + steps >= chunk.first_step:  # else done before resume
        chunk.clock.scale_start = time.perf_counter()
        _start_scale(group, chunk, scale, shape)
        _run_steps(group, chunk, steps)
        if chunk.diverged:
          break
      chunk.done += steps
      chunk.coarse = chunk.inputs
    results.update((r.member.index, r) for r in _finish_chunk(group, chunk))
  return [results[m.index] for m in members]


def _group(members, loader, mesh, size, chunks, index, callbacks,
           should_stop, chunks_after) -> Group:
  """The group's network, params and compiled functions."""
  program = members[0].program
  assert all(m.program == program for m in members), 'one program per group'
  content_layers = union_layers([m.settings.content_layers for m in members],
                                program.network)
  style_layers = union_layers([m.settings.style_layers for m in members],
                              program.network)
  params = step.prepare_params(
      program, loader.params(program.weights, program.network),
      content_layers + style_layers,
      max(m.largest_side for m in members), per_device(size, mesh))
  fns = compiled(program.update, mesh, size)
  device_params = sharding.replicate(params, fns.replicated)
  return Group(program, loader, step.make_model(program), params,
               device_params, targets.forward_params(device_params),
               content_layers, style_layers, fns, size, chunks, chunks_after,
               index, callbacks, should_stop, jax.process_index() == 0)


def _start_chunk(group: Group, index: int, members: list[Member],
                 resume: checkpoint.Checkpoint | None) -> Chunk:
  """A chunk's state before its first scale: fresh, or from ``resume``
  when that is this chunk's checkpoint (checked against this run)."""
  size, total = group.size, group.program.total_steps
  resumed = resume if resume is not None and list(
      resume.extra.get('members', ())) == [m.index for m in members] else None
  finite = np.ones(size, bool)
  if resumed:
    if resumed.image.shape[0] != size:
      raise UserError(
          f'the checkpoint holds a chunk of {resumed.image.shape[0]} slots; '
          f'on {group.fns.per_member.mesh.devices.size} device(s) this run '
          f'makes chunks of {size}: resume on as many devices as the '
          'stopped run used')
    # A run checkpoints after a step that has steps after it.
    if not 0 < resumed.done < total:
      raise UserError(
          f'the checkpoint is of step {resumed.done}; this run has {total} '
          f'steps, so it can continue after step 1 to {total - 1} only; '
          f'{checkpoint.RESTART}')
    kept_finite = resumed.extra.get('finite')
    if kept_finite is None or np.shape(kept_finite) != (size,):
      raise UserError('the checkpoint is malformed: it does not say which '
                      f'of its {size} slots are finite; rerun without '
                      '--resume')
    finite[:] = kept_finite
  first_step = resumed.done if resumed else 0
  slots = members + [members[-1]] * (size - len(members))  # pad with copies
  return Chunk(index, members, slots, finite, resumed, first_step,
               Clock(time.perf_counter(), log_step=first_step))


def _scale_inputs(group: Group, chunk: Chunk, px: int) -> Callable:
  """member index -> (its ``Inputs``, its ``Targets``) at ``px``, each
  made once (a padded slot reuses its member's)."""
  by_index = {m.index: m for m in chunk.members}

  @functools.cache
  def inputs(index):
    m = by_index[index].settings
    loaded = targets.load_inputs(m, px, group.loader.images_for(m))
    made = targets.make_targets(
        m, group.model, group.params, loaded,
        content_layers=group.content_layers,
        style_layers=group.style_layers, area_ratio=(m.image_size / px) ** 2)
    return loaded, made
  return inputs


def _start_scale(group: Group, chunk: Chunk, scale: int, shape) -> None:
  """A scale's targets and its start: from the checkpoint when it was
  taken in this scale, from each member's init image at the first scale
  run, else from the coarser scale's output (``_start_from_coarser``)."""
  chunk.scale, put = scale, functools.partial(
      sharding.put, n=group.size, sharding=group.fns.per_member)
  chunk.inputs = _scale_inputs(group, chunk, max(shape[:2]))
  chunk.targets, chunk.hparams = put(lambda j: (
      chunk.inputs(chunk.slots[j].index)[1],
      chunk.slots[j].hparams))
  if chunk.done < chunk.first_step:  # the checkpoint's step is in here
    ckpt = chunk.resumed
    if ckpt.image.shape != (group.size, *shape):
      raise UserError(
          f'the checkpoint holds images of {ckpt.image.shape[1:]} at step '
          f'{chunk.first_step}; this run has {shape} there')
    chunk.image = put(lambda j: ckpt.image[j])
    host = checkpoint.fit_state(ckpt, jax.eval_shape(
        group.fns.init, chunk.hparams, chunk.image))
    chunk.state = put(lambda j: jax.tree.map(lambda v: v[j], host))
    return
  if chunk.image is None:
    chunk.image = put(lambda j: targets.init_image(
        chunk.slots[j].settings,
        chunk.inputs(chunk.slots[j].index)[0].content))
  else:
    _start_from_coarser(group, chunk, shape)
  chunk.state = group.fns.init(chunk.hparams, chunk.image)


def _start_from_coarser(group: Group, chunk: Chunk, shape) -> None:
  """The coarser scale's output resized to ``shape``, plus the photo's
  finer detail (``targets.scale_detail``)."""
  if group.should_stop and jax.process_count() == 1:
    # Kept (not donated) until this scale's first step is under way: a
    # stop while it compiles checkpoints them.
    chunk.boundary = (chunk.done, chunk.image, chunk.state, chunk.coarse)
  resized = jax.jit(jax.vmap(lambda x: jax.image.resize(x, shape, 'cubic')),
                    out_shardings=group.fns.per_member)(group.fns.finish(
                        chunk.hparams, chunk.image, chunk.state))
  chunk.image = resized + sharding.put(lambda j: targets.scale_detail(
      chunk.slots[j].settings, chunk.inputs(chunk.slots[j].index)[0].content,
      chunk.coarse(chunk.slots[j].index)[0].content), group.size,
                                       group.fns.per_member)


def _run_steps(group: Group, chunk: Chunk, steps: int) -> None:
  """The scale's steps after the one it starts from, each followed by
  ``_after_step``; stops early when every member diverged."""
  first = max(chunk.done, chunk.first_step)
  if first == 0:
    _log(group, chunk, 0)
  in_flight = None
  for i in range(first + 1, chunk.done + steps + 1):
    args = (group.device_params, chunk.targets, chunk.hparams, chunk.image,
            chunk.state)
    if i == first + 1:  # compiles, once per shape: a stop need not wait
      out = _first_call(group.fns.step, args, group.should_stop)
      if out is None:
        raise _stop_while_compiling(group, chunk, first)
      chunk.boundary = None
    else:
      out = group.fns.step(*args)
    chunk.image, chunk.state, metrics = out
    # Dispatch runs ahead of the device: wait for the step before this
    # one, so that at most this step is queued behind the one running and
    # a stop (asked below) lands after at most the step in progress, not
    # after every step queued up to the next log step. (The device never
    # idles: this step is queued while it waits.)
    if in_flight is not None:
      jax.block_until_ready(in_flight)
    in_flight = metrics
    if i == first + 1:  # keep compilation out of the speeds
      jax.block_until_ready(chunk.image)
      clock = chunk.clock
      clock.log, clock.log_step = time.perf_counter(), i
      if clock.first is None:
        clock.first = clock.log
      else:  # a finer scale: its start and first step are not stepping
        clock.paused += clock.log - clock.scale_start
        clock.paused_steps += 1
    _after_step(group, chunk, i, last=i == chunk.done + steps)
    if chunk.diverged:
      return


def _after_step(group: Group, chunk: Chunk, i: int, last: bool) -> None:
  """Step ``i``'s log row, saved image and checkpoint when their periods
  say so, and the stop when asked (raises ``Stopped``)."""
  program, total = group.program, group.program.total_steps
  logged = bool(program.log_every and i % program.log_every == 0 or last)
  if logged:
    _log(group, chunk, i)
    if not chunk.finite[:len(chunk.members)].any():
      chunk.diverged = True  # every member diverged: nothing left to run
      return
  saved = bool(program.save_every and i % program.save_every == 0)
  if saved:
    _save(group, chunk, i)
  # (At the chunk's last step there is nothing left to keep: finish.)
  if program.checkpoint_every and i % program.checkpoint_every == 0 and (
      i < total):
    _keep_checkpoint(group, chunk, i, logged)
  if i < total and group.should_stop and sharding.any_process(
      group.should_stop()):
    kept_state = _keep_checkpoint(group, chunk, i, logged)
    if not chunk.finite[:len(chunk.members)].any():
      chunk.diverged = True  # nothing finite to keep: it diverged
      return
    if not saved:
      _save(group, chunk, i)
    raise Stopped(i, checkpointed=kept_state)


def _restored(chunk: Chunk, j: int, value, inputs=None) -> np.ndarray:
  """Slot ``j``'s output with its colours restored (``inputs``: of the
  scale it was made at; default this one)."""
  index = chunk.slots[j].index
  return colour.restore(chunk.slots[j].settings.preserve_colour, value,
                        (inputs or chunk.inputs)(index)[0].original)


def _mark(chunk: Chunk, now_finite: np.ndarray) -> None:
  """Updates ``finite``; a member that is no longer keeps the output of
  the latest log step where it was (``last_out``, on the device)."""
  newly = chunk.finite & ~now_finite
  if newly[:len(chunk.members)].any() and chunk.last_out:
    at_step, out, at_inputs = chunk.last_out
    for j, value in sharding.local_slots(out).items():
      if j < len(chunk.members) and newly[j]:
        chunk.last_finite[j] = (at_step,
                                _restored(chunk, j, value, at_inputs))
  chunk.finite &= now_finite


def _row(group: Group, chunk: Chunk, j: int, i: int, total, parts,
         rate=0.0, evals=None, times=(None, None)) -> dict:
  return {'member': chunk.members[j].index, 'step': i,
          'size': max(group.program.plan[chunk.scale][0][:2]),
          'loss': float(total[j]),
          **{k: float(v[j]) for k, v in parts.items()},
          **({} if evals is None else {'evals_per_step': evals[j]}),
          'steps_per_s': rate, 'time_s': times[0], 'left_s': times[1]}


def _times(group: Group, chunk: Chunk, i: int, now: float):
  """Seconds since the chunk started, and the estimated seconds left in
  the run (``progress.estimate``: this chunk's, and its steps' time again
  for each chunk after it; None until measured)."""
  clock, plan = chunk.clock, group.program.plan
  clock.history = progress.prune(plan, clock.history +
                                 [(i, now - clock.start)])
  guess = progress.estimate(plan, clock.history)
  if guess is None:
    return now - clock.start, None
  later = group.chunks - chunk.index - 1 + group.chunks_after
  return now - clock.start, guess[0] + later * guess[1]


def _evals_per_step(chunk: Chunk, i: int, evals: np.ndarray) -> list:
  """Objective evaluations per step since the last log row of this scale
  (``evals``: each slot's count since the scale's start)."""
  since, before = chunk.clock.evals if chunk.clock.evals[0] > chunk.done \
      else (chunk.done, np.zeros_like(evals))
  chunk.clock.evals = (i, evals)
  return ((evals - before) / (i - since) if i > since
          else np.zeros(len(evals))).tolist()


def _log(group: Group, chunk: Chunk, i: int) -> None:
  """Step ``i``'s losses: a row per member and a progress line."""
  fns, clock, n = group.fns, chunk.clock, len(chunk.members)
  (total, parts), evals = sharding.gather((fns.evaluate(
      group.eval_params, chunk.targets, chunk.hparams, chunk.image,
      chunk.state), chunk.state.evals))
  per_step = _evals_per_step(chunk, i, np.asarray(evals))
  now = time.perf_counter()
  rate = ((i - clock.log_step) / max(now - clock.log, 1e-9)
          if clock.log is not None and i > clock.log_step else 0.0)
  clock.log, clock.log_step = now, i
  _mark(chunk, np.isfinite(total))
  chunk.last_out = (i, fns.finish(chunk.hparams, chunk.image, chunk.state),
                    chunk.inputs)
  elapsed = _times(group, chunk, i, now)
  for j in range(n):
    chunk.last[j] = _row(group, chunk, j, i, total, parts, rate,
                         per_step if i else None, elapsed)
    if group.lead:
      group.callbacks.log(chunk.last[j])
  if group.lead:
    group.callbacks.progress(progress.line(
        total_steps=group.program.total_steps, scales=len(group.program.plan),
        chunk_size=n, named=bool(chunk.members[0].values),
        rows=[chunk.last[j] for j in range(n)], totals=total, rate=rate,
        left_s=elapsed[1], group=group.index, chunk=chunk.index,
        chunks=group.chunks))


def _save(group: Group, chunk: Chunk, i: int) -> None:
  out = group.fns.finish(chunk.hparams, chunk.image, chunk.state)
  for j, value in sharding.local_slots(out).items():
    if j < len(chunk.members) and chunk.finite[j]:
      group.callbacks.save(chunk.members[j], i, _restored(chunk, j, value))


def _keep_checkpoint(group: Group, chunk: Chunk, i: int,
                     logged: bool) -> bool:
  """Hands the chunk's host arrays to ``Callbacks.checkpoint``, unless no
  member is finite any more (then the last checkpoint stays); whether it
  did."""
  if not logged:
    total, parts = sharding.gather(group.fns.evaluate(
        group.eval_params, chunk.targets, chunk.hparams, chunk.image,
        chunk.state))
    now_finite = np.isfinite(total)
    for j in range(len(chunk.members)):  # its result names where it diverged
      if chunk.finite[j] and not now_finite[j]:
        chunk.last[j] = _row(group, chunk, j, i, total, parts)
    _mark(chunk, now_finite)
  return _hand_checkpoint(group, chunk, i,
                          *sharding.gather((chunk.image, chunk.state)))


def _hand_checkpoint(group: Group, chunk: Chunk, i: int, host_image,
                     host_state) -> bool:
  # The image and its average decide; the optimiser's state may hold
  # infinities by design (a line search's errors and initial value).
  ok = chunk.finite & np.array([_finite((host_image[j], jax.tree.map(
      lambda v: v[j], host_state.average))) for j in range(group.size)])
  if not ok[:len(chunk.members)].any():
    return False
  group.callbacks.checkpoint(checkpoint.Checkpoint(
      i, host_image, host_state, {}, {
          'members': np.array([m.index for m in chunk.members]),
          'finite': chunk.finite.copy()}))
  return True


def _stop_while_compiling(group: Group, chunk: Chunk, first: int) -> Stopped:
  """A stop during a scale's compilation: the checkpoint and output of the
  scale before (``chunk.boundary``), or nothing new when this run computed
  none."""
  if chunk.boundary is None:
    return Stopped(first, checkpointed=chunk.resumed is not None,
                   saved=False)
  at, image, state, inputs = chunk.boundary
  kept_state = _hand_checkpoint(group, chunk, at,
                                *sharding.gather((image, state)))
  out = group.fns.finish(chunk.hparams, image, state)
  for j, value in sharding.local_slots(out).items():
    if j < len(chunk.members) and chunk.finite[j]:
      group.callbacks.save(chunk.members[j], at,
                           _restored(chunk, j, value, inputs))
  return Stopped(at, checkpointed=kept_state)


def _finish_chunk(group: Group, chunk: Chunk) -> list[Result]:
  """The chunk's outputs (``Callbacks.image``) and its members' results."""
  out = group.fns.finish(chunk.hparams, chunk.image, chunk.state)
  jax.block_until_ready(out)
  end, clock = time.perf_counter(), chunk.clock
  ran = (chunk.last[0]['step'] if chunk.last else group.program.total_steps
         ) - chunk.first_step - 1 - clock.paused_steps
  speed = (ran / (end - clock.first - clock.paused)
           if ran > 0 and clock.first else float('nan'))
  n = len(chunk.members)
  local = {j: v for j, v in sharding.local_slots(out).items()
           if j < n and chunk.finite[j]}
  for j, value in local.items():
    group.callbacks.image(chunk.members[j], _restored(chunk, j, value))
  results = []
  for j, m in enumerate(chunk.members):
    metrics = {k: v for k, v in chunk.last[j].items()
               if k not in ('member', 'steps_per_s', 'time_s', 'left_s')}
    results.append(Result(
        m, metrics, 'ok' if chunk.finite[j] else 'diverged',
        end - clock.start, speed, group.index, chunk.index,
        written=j in local,
        last_finite=None if chunk.finite[j] else chunk.last_finite.get(j)))
    group.callbacks.result(results[-1])
  return results


COMPILING = 'nst-compile'  # the thread of _first_call


def _first_call(fn, args, should_stop):
  """``fn(*args)``, the first call of a step at a shape (it traces and
  compiles: seconds to minutes), on a helper thread while this one asks
  ``should_stop``: None if a stop came first. The call is then left to
  finish on its own and its results are dropped (``args``' donated
  buffers with them); the interpreter waits for it at exit (a daemon
  thread inside XLA when the interpreter is torn down aborts the
  process). One process only: several would have to agree on when they
  stopped."""
  if should_stop is None or jax.process_count() > 1:
    return fn(*args)
  call = _Call(fn, args)
  call.start()
  while call.is_alive():
    call.join(0.05)
    if call.is_alive() and should_stop():
      return None
  if call.error is not None:
    raise call.error
  return call.value


class _Call(threading.Thread):
  """``fn(*args)`` on the thread ``COMPILING``; its value or its error."""

  def __init__(self, fn, args):
    super().__init__(name=COMPILING)
    self.fn, self.args, self.value, self.error = fn, args, None, None

  def run(self):
    try:
      self.value = self.fn(*self.args)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e


def run(groups: list[list[Member]], *, loader: Loader | None = None,
        devices=None, chunk_size: int = 0,
        callbacks: Callbacks | None = None,
        should_stop: Callable[[], bool] | None = None,
        resume: checkpoint.Checkpoint | None = None,
        kept: dict[int, Result] | None = None) -> list[Result]:
  """Every group in turn (``run_group``) on ``devices`` (default: all of
  them, on every process); the results in group order."""
  loader = loader or Loader()
  mesh = sharding.member_mesh(devices)
  kept = kept or {}
  to_run = [len(chunk_members(group, chunk_size, mesh.devices.size, kept)[0])
            for group in groups]
  results = []
  for g, group in enumerate(groups):
    if all(m.index in kept for m in group):
      results += [kept[m.index] for m in group]
      continue
    results += run_group(group, loader=loader, mesh=mesh,
                         chunk_size=chunk_size, group_index=g,
                         callbacks=callbacks, should_stop=should_stop,
                         resume=resume, kept=kept,
                         chunks_after=sum(to_run[g + 1:]))
  return results


def stylize(config, *, params=None, load: Callable | None = None,
            callbacks: Callbacks | None = None,
            should_stop: Callable[[], bool] | None = None,
            resume: checkpoint.Checkpoint | None = None, devices=None,
            memory_check: bool = True
            ) -> tuple[np.ndarray, dict[str, float]]:
  """One run of ``config`` (a group of one on one device), keeping nothing
  on disk: its output (float, Caffe convention, colours restored) and its
  last logged losses. ``params`` replace the config's weights; ``load(spec,
  size)`` replaces reading images (``images.load``). A run whose loss
  became non-finite raises ``Diverged``, carrying the last finite output.
  ``memory_check``: a run whose estimated memory is more than is available
  (``nst.memory.check``; the sizes of sources that are no files are taken
  as squares) is refused before any image is read.
  """
  backend.setup()  # when this is the process's first use of JAX
  if memory_check:
    memory.check([config])
  loader = Loader()
  if load is not None:
    loader.image = lambda s, size, **options: load(s, size)
  if params is not None:
    loader.params = lambda *_: params
  member = spec.resolve(config, loader.images_for(config))
  keep = _KeepFinal(callbacks)
  [result] = run([[member]], loader=loader,
                 devices=(devices or jax.devices())[:1], callbacks=keep,
                 should_stop=should_stop, resume=resume)
  if result.status != 'ok':
    raise diverged(result)
  return keep.final, result.metrics


def diverged(result: Result) -> Diverged:
  """The error for a member whose loss became non-finite."""
  at, kept = result.metrics['step'], result.last_finite
  return Diverged(
      f'the loss became {result.metrics["loss"]} by step {at} (last finite: '
      + (f'step {kept[0]}' if kept else 'none') + '); the learning rate or '
      'a loss weight is likely too high', at, kept)


class _KeepFinal(Callbacks):
  """Keeps the final image; hands everything on to ``inner``."""

  def __init__(self, inner: Callbacks | None):
    self.inner, self.final = inner or Callbacks(), None

  def progress(self, line):
    self.inner.progress(line)

  def log(self, row):
    self.inner.log(row)

  def save(self, member, step_, image):
    self.inner.save(member, step_, image)

  def checkpoint(self, ckpt):
    self.inner.checkpoint(ckpt)

  def image(self, member, image):
    self.final = image
    self.inner.image(member, image)

  def result(self, result):
    self.inner.result(result)
