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
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst import checkpoint, colour, images, optim, step, targets, vgg, weights
from nst import memory, progress, sharding, spec
from nst.errors import Diverged, Stopped, UserError
from nst.spec import Member, largest_side


@dataclasses.dataclass
class Result:
  member: Member
  metrics: dict[str, float]  # the last log step's: step, size, losses
  status: str        # 'ok', or 'diverged' (a non-finite loss was seen)
  wall_s: float      # of the member's chunk, compilation included
  steps_per_s: float  # of the chunk after its first step (compiled)
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


@functools.cache
def compiled(update: spec.Update, mesh: Mesh, batch: int):
  """The chunk's step, state init, evaluation and output for ``batch``
  members on ``mesh``: jitted once per network and optimiser (``update``),
  mesh and batch, for every chunk and group that shares them."""
  program = update
  per_member = NamedSharding(mesh, PartitionSpec('member'))
  replicated = NamedSharding(mesh, PartitionSpec())
  single = batch == 1 and mesh.devices.size == 1
  lift = functools.partial(over_members, single=single)
  step_ = jax.jit(lift(step.make_update(program), shared_first=True),
                  in_shardings=(replicated,) + (per_member,) * 4,
                  out_shardings=per_member, donate_argnums=(3, 4))
  init = jax.jit(lift(functools.partial(step.init_state, program),
                      shared_first=False), out_shardings=per_member)
  evaluate = jax.jit(lift(functools.partial(step.evaluate, program),
                          shared_first=True), out_shardings=per_member)
  finish = jax.jit(lift(step.output, shared_first=False),
                   out_shardings=per_member)
  return step_, init, evaluate, finish, per_member, replicated


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
  every = -(-n // devices) * devices
  searching = [c.optimizer for c in configs
               if optim.uses_linesearch(c.optimizer)]
  if searching and jax.default_backend() == 'cpu':
    return devices, (
        f'sweep: chunks of {devices} (one member per device): '
        f"{searching[0]}'s line search would make a batch wait for its "
        'slowest member at every step, which on a CPU costs more than '
        'batching gains')
  if not memory_check:
    return every, f'sweep: all {n} members in one batch (no memory check)'
  size, est, free = memory.largest_chunk(configs, devices=devices)
  if size is None:  # memory.check says what would fit
    return devices, f'sweep: chunks of {devices}: not even these fit'
  where = 'device' if 'device' in free and not est.cpu else 'host'
  need = est.on_device if where == 'device' else est.on_host
  have = (f'an estimated {memory.size_text(need)} of the '
          f'{memory.size_text(free[where][0])} available'
          if where in free else 'no memory limit known')
  if size >= every:
    return every, f'sweep: all {n} members in one batch ({have})'
  return size, (f'sweep: chunks of {size} of the {n} members, the most '
                f'that fit ({have})')


def chunk_members(members: list[Member], chunk_size: int, devices: int
                  ) -> tuple[list[list[Member]], int]:
  """A group's chunks, in member order, and their size: ``chunk_size``
  members (0 = all), rounded up to a multiple of ``devices`` (the last
  chunk is padded to it)."""
  size = min(chunk_size or len(members), len(members))
  size = -(-size // devices) * devices
  return [members[k:k + size] for k in range(0, len(members), size)], size


def union_layers(layer_sets, network) -> tuple[str, ...]:
  """The layers of any of ``layer_sets``, in network order."""
  wanted = set(itertools.chain.from_iterable(layer_sets))
  return tuple(l for l in vgg.layer_names(network) if l in wanted)


def _finite(tree) -> bool:
  return all(np.isfinite(v).all() for v in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(v).dtype, np.floating))


# --- The loop ----------------------------------------------------------------

def run_group(members: list[Member], *, loader: Loader, mesh: Mesh,
              chunk_size: int = 0, group_index: int = 0,
              callbacks: Callbacks | None = None,
              should_stop: Callable[[], bool] | None = None,
              resume: checkpoint.Checkpoint | None = None,
              kept: dict[int, Result] | None = None,
              chunks_after: int = 0) -> list[Result]:
  """Optimises every member of one group (one ``Program``); returns their
  results. A chunk whose members all have a result in ``kept`` (finished
  by an earlier, stopped run) is not run again: its kept results are
  returned.

  ``should_stop()`` is asked after every step: yes (from any process: all
  stop after that step) checkpoints the chunk, saves each member's output
  so far, and raises ``Stopped``. ``resume``, a checkpoint of such a chunk
  (``extra['members']``: its member indices), continues that chunk from
  its step. A member whose loss becomes non-finite is marked 'diverged';
  a chunk whose members all diverged ends early. ``chunks_after``: the
  chunks of later groups still to run (the time left counts them).
  """
  cb = callbacks or Callbacks()
  program = members[0].program
  assert all(m.program == program for m in members), 'one program per group'
  lead = jax.process_index() == 0
  content_layers = union_layers([m.config.content_layers for m in members],
                                program.network)
  style_layers = union_layers([m.config.style_layers for m in members],
                              program.network)
  model = step.make_model(program)
  params = step.prepare_params(
      program, loader.params(program.weights, program.network),
      content_layers + style_layers,
      max(largest_side(m.config) for m in members))
  devices = mesh.devices.size
  chunks, size = chunk_members(members, chunk_size, devices)
  kept = kept or {}
  step_fn, init, evaluate, finish, per_member, replicated = compiled(
      program.update, mesh, size)
  device_params = sharding.replicate(params, replicated)
  # Targets and logged losses: XLA's own convolutions (targets.forward_params)
  eval_params = targets.forward_params(device_params)
  plan, total_steps = program.plan, program.total_steps
  results = []
  for chunk_index, chunk in enumerate(chunks):
    if all(m.index in kept for m in chunk):
      results += [kept[m.index] for m in chunk]
      continue
    slots = chunk + [chunk[-1]] * (size - len(chunk))  # pad with copies
    by_index = {m.index: m for m in chunk}
    resumed = resume if resume is not None and list(
        resume.extra.get('members', ())) == [m.index for m in chunk] else None
    finite = np.ones(size, bool)
    if resumed:
      if resumed.image.shape[0] != size:
        raise UserError(
            f'the checkpoint holds a chunk of {resumed.image.shape[0]} '
            f'slots; on {devices} device(s) this run makes chunks of {size}: '
            'resume on as many devices as the stopped run used')
      # A run checkpoints after a step that has steps after it.
      if not 0 < resumed.done < total_steps:
        raise UserError(
            f'the checkpoint is of step {resumed.done}; this run has '
            f'{total_steps} steps, so it can continue after step 1 to '
            f'{total_steps - 1} only; {checkpoint.RESTART}')
      kept_finite = resumed.extra.get('finite')
      if kept_finite is None or np.shape(kept_finite) != (size,):
        raise UserError('the checkpoint is malformed: it does not say which '
                        f'of its {size} slots are finite; rerun without '
                        '--resume')
      finite[:] = kept_finite
    first_step = resumed.done if resumed else 0
    last, last_finite, last_out = {}, {}, []
    clock = {'start': time.perf_counter(), 'first': None, 'log': None,
             'log_step': first_step, 'evals': (-1, None), 'history': []}
    image = state = hparams = chunk_targets = None
    done, scale = 0, 0

    def restored(j, value, at=None):
      return colour.restore(slots[j].config.preserve_colour, value,
                            (at or inputs)(slots[j].index)[0].original)

    def outputs():
      return sharding.local_slots(finish(hparams, image, state))

    def mark(now_finite):
      """Updates ``finite``; a member that is no longer keeps the output
      of the latest log step where it was (``last_out``, on the device)."""
      newly = finite & ~now_finite
      if newly[:len(chunk)].any() and last_out:
        at_step, out, at_inputs = last_out[0]
        for j, value in sharding.local_slots(out).items():
          if j < len(chunk) and newly[j]:
            last_finite[j] = (at_step, restored(j, value, at_inputs))
      finite[:] &= now_finite

    def row(j, i, total, parts, rate=0.0, evals=None, times=(None, None)):
      return {'member': chunk[j].index, 'step': i,
              'size': max(plan[scale][0][:2]), 'loss': float(total[j]),
              **{k: float(v[j]) for k, v in parts.items()},
              **({} if evals is None else {'evals_per_step': evals[j]}),
              'steps_per_s': rate, 'time_s': times[0], 'left_s': times[1]}

    def times(i, now):
      """Seconds since the chunk started, and the estimated seconds left
      in the run (``progress.estimate``: this chunk's, and its steps'
      time again for each chunk after it; None until measured)."""
      clock['history'] = progress.prune(
          plan, clock['history'] + [(i, now - clock['start'])])
      guess = progress.estimate(plan, clock['history'])
      if guess is None:
        return now - clock['start'], None
      later = len(chunks) - chunk_index - 1 + chunks_after
      return now - clock['start'], guess[0] + later * guess[1]

    def evals_per_step(i, evals):
      """Objective evaluations per step since the last log row of this
      scale (``evals``: each slot's count since the scale's start)."""
      since, before = clock['evals'] if clock['evals'][0] > done else (
          done, np.zeros_like(evals))
      clock['evals'] = (i, evals)
      return ((evals - before) / (i - since) if i > since
              else np.zeros(len(evals))).tolist()

    def log(i):
      (total, parts), evals = sharding.gather((evaluate(
          eval_params, chunk_targets, hparams, image, state), state.evals))
      per_step = evals_per_step(i, np.asarray(evals))
      now = time.perf_counter()
      rate = ((i - clock['log_step']) / max(now - clock['log'], 1e-9)
              if clock['log'] is not None and i > clock['log_step'] else 0.0)
      clock['log'], clock['log_step'] = now, i
      mark(np.isfinite(total))
      last_out[:] = [(i, finish(hparams, image, state), inputs)]
      elapsed = times(i, now)
      for j in range(len(chunk)):
        last[j] = row(j, i, total, parts, rate, per_step if i else None,
                      elapsed)
        if lead:
          cb.log(last[j])
      if lead:
        cb.progress(progress.line(
            total_steps=total_steps, scales=len(plan),
            chunk_size=len(chunk), named=bool(chunk[0].values),
            rows=[last[j] for j in range(len(chunk))], totals=total,
            rate=rate, left_s=elapsed[1], group=group_index,
            chunk=chunk_index, chunks=len(chunks)))

    def save(i):
      for j, value in outputs().items():
        if j < len(chunk) and finite[j]:
          cb.save(chunk[j], i, restored(j, value))

    def keep_checkpoint(i, logged: bool) -> bool:
      """Hands the chunk's host arrays to ``cb.checkpoint``, unless no
      member is finite any more (then the last checkpoint stays); whether
      it did."""
      if not logged:
        total, parts = sharding.gather(evaluate(
            eval_params, chunk_targets, hparams, image, state))
        now_finite = np.isfinite(total)
        for j in range(len(chunk)):  # its result names where it diverged
          if finite[j] and not now_finite[j]:
            last[j] = row(j, i, total, parts)
        mark(now_finite)
      return hand_checkpoint(i, *sharding.gather((image, state)))

    def hand_checkpoint(i, host_image, host_state) -> bool:
      # The image and its average decide; the optimiser's state may hold
      # infinities by design (a line search's errors and initial value).
      ok = finite & np.array([_finite((host_image[j], jax.tree.map(
          lambda v: v[j], host_state.average))) for j in range(size)])
      if not ok[:len(chunk)].any():
        return False
      cb.checkpoint(checkpoint.Checkpoint(
          i, host_image, host_state, {}, {
              'members': np.array([m.index for m in chunk]),
              'finite': finite.copy()}))
      return True

    def stop_while_compiling(first, boundary):
      """A stop during a scale's compilation: the checkpoint and output
      of the scale before (``boundary``: its last step, image, state and
      inputs), or nothing new when this run computed none."""
      if boundary is None:
        return Stopped(first, checkpointed=resumed is not None,
                       saved=False)
      at, at_image, at_state, at_inputs = boundary
      kept_state = hand_checkpoint(at,
                                   *sharding.gather((at_image, at_state)))
      out = finish(hparams, at_image, at_state)
      for j, value in sharding.local_slots(out).items():
        if j < len(chunk) and finite[j]:
          cb.save(chunk[j], at, restored(j, value, at_inputs))
      return Stopped(at, checkpointed=kept_state)

    stopped, boundary = False, None
    for scale, ((shape, steps)) in enumerate(plan):
      if done + steps < first_step:  # finished before the checkpoint
        done += steps
        continue
      px = max(shape[:2])

      @functools.cache  # a padded slot reuses its member's inputs
      def inputs(index, px=px):
        m = by_index[index].config
        loaded = targets.load_inputs(m, px, loader.images_for(m))
        made = targets.make_targets(
            m, model, params, loaded, content_layers=content_layers,
            style_layers=style_layers, area_ratio=(m.image_size / px) ** 2)
        return loaded, made

      chunk_targets, hparams = sharding.put(lambda j: (
          inputs(slots[j].index)[1], optim.hyperparams(slots[j].config)),
          size, per_member)
      first = done
      if done < first_step:  # the checkpoint's step is in this scale
        if resumed.image.shape != (size, *shape):
          raise UserError(
              f'the checkpoint holds images of {resumed.image.shape[1:]} '
              f'at step {first_step}; this run has {shape} there')
        image = sharding.put(lambda j: resumed.image[j], size, per_member)
        host = checkpoint.fit_state(resumed, jax.eval_shape(init, hparams,
                                                            image))
        state = sharding.put(lambda j: jax.tree.map(lambda v: v[j], host),
                             size, per_member)
        first = first_step
      else:
        if image is None:
          image = sharding.put(lambda j: targets.init_image(
              slots[j].config, inputs(slots[j].index)[0].content), size,
              per_member)
        else:
          if should_stop and jax.process_count() == 1:
            # Kept (not donated) until this scale's first step is under
            # way: a stop while it compiles checkpoints them.
            boundary = (done, image, state, coarse)
          image = jax.jit(
              jax.vmap(lambda x: jax.image.resize(x, shape, 'cubic')),
              out_shardings=per_member)(finish(hparams, image, state))
          image = image + sharding.put(lambda j: targets.scale_detail(
              slots[j].config, inputs(slots[j].index)[0].content,
              coarse(slots[j].index)[0].content), size, per_member)
        state = init(hparams, image)
      if first == 0:
        log(0)
      in_flight = None
      for i in range(first + 1, done + steps + 1):
        args = device_params, chunk_targets, hparams, image, state
        if i == first + 1:  # compiles, once per shape: a stop need not wait
          out = _first_call(step_fn, args, should_stop)
          if out is None:
            raise stop_while_compiling(first, boundary)
          image, state, metrics = out
          boundary = None
        else:
          image, state, metrics = step_fn(*args)
        # Dispatch runs ahead of the device: wait for the step before this
        # one, so that at most this step is queued behind the one running
        # and a stop (asked below) lands after at most the step in
        # progress, not after every step queued up to the next log step.
        # (The device never idles: this step is queued while it waits.)
        if in_flight is not None:
          jax.block_until_ready(in_flight)
        in_flight = metrics
        if i == first + 1:  # keep compilation out of the speeds
          jax.block_until_ready(image)
          clock['log'], clock['log_step'] = time.perf_counter(), i
          clock['first'] = clock['first'] or clock['log']
        logged = (program.log_every and i % program.log_every == 0
                  or i == done + steps)
        if logged:
          log(i)
          if not finite[:len(chunk)].any():
            stopped = True  # every member diverged: nothing left to run
            break
        if program.save_every and i % program.save_every == 0:
          save(i)
        # (At the chunk's last step there is nothing left to keep: finish.)
        if (program.checkpoint_every and i % program.checkpoint_every == 0
            and i < total_steps):
          keep_checkpoint(i, logged)
        if (i < total_steps and should_stop
            and sharding.any_process(should_stop())):
          kept_state = keep_checkpoint(i, logged)
          if not finite[:len(chunk)].any():
            stopped = True  # nothing finite to keep: it diverged
            break
          if not (program.save_every and i % program.save_every == 0):
            save(i)
          raise Stopped(i, checkpointed=kept_state)
      if stopped:
        break
      done += steps
      coarse = inputs  # the next scale adds the photo's finer detail
    out = finish(hparams, image, state)
    jax.block_until_ready(out)
    end = time.perf_counter()
    ran = (last[0]['step'] if last else total_steps) - first_step - 1
    speed = (ran / (end - clock['first']) if ran > 0 and clock['first']
             else float('nan'))
    local = {j: v for j, v in sharding.local_slots(out).items()
             if j < len(chunk) and finite[j]}
    for j, value in local.items():
      cb.image(chunk[j], restored(j, value))
    for j, m in enumerate(chunk):
      metrics = {k: v for k, v in last[j].items()
                 if k not in ('member', 'steps_per_s', 'time_s', 'left_s')}
      results.append(Result(
          m, metrics, 'ok' if finite[j] else 'diverged',
          end - clock['start'], speed, group_index, chunk_index,
          written=j in local,
          last_finite=None if finite[j] else last_finite.get(j)))
      cb.result(results[-1])
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
  out = []

  def call():
    try:
      out.append(fn(*args))
    except BaseException as e:  # pylint: disable=broad-except
      out.append(e)

  worker = threading.Thread(target=call, name=COMPILING)
  worker.start()
  while worker.is_alive():
    worker.join(0.05)
    if worker.is_alive() and should_stop():
      return None
  if isinstance(out[0], BaseException):
    raise out[0]
  return out[0]


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
  to_run = [sum(not all(m.index in kept for m in chunk) for chunk in
                chunk_members(group, chunk_size, mesh.devices.size)[0])
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
