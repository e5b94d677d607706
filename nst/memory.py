"""The memory a run needs, estimated from its config and its images'
headers, and checked before any image is read at size, anything is put on
a device or anything is written: ``check`` refuses a run that cannot fit
with one ``UserError`` naming the estimate, the memory available and
single changes with which it would fit.

The estimate, in bytes, for one device holding ``n`` members of a chunk (a
single run: n = 1) at the run's final, largest scale::

  device = P + n (X + T) + max(n W, F[, C])   (P twice off a CPU)
  host   = R + I + RUNTIME [+ C]              (on a CPU, + device: one RAM)

  P  the network's parameters as the step runs with them (``vgg.prepare``:
     kernels, biases, flipped kernels and Winograd transforms of the layers
     up to the deepest one used). Off a CPU the run holds them twice (the
     targets' copy and the step's replicated one); on a CPU the two share
     their buffers
  X  a member's image, its iterate average and its optimiser's state
     (``optim.Optimizer.state_images``: Adam 2 images, L-BFGS 2
     ``lbfgs_memory`` + 2, + 3 with the line search)
  T  its targets: each term's ``losses.Term.nbytes`` (content features,
     style moments (one per masked region), masks at each style layer)
  W  the step's workspace: ``STORED`` A + ``WORKING`` L, A the values of
     every convolution's output up to the deepest layer used and L the
     largest of them, at the compute dtype's size (float32 on a CPU, whose
     XLA computes bfloat16 convolutions in float32); with ``remat``, the
     blocks' inputs + ``STORED`` x the largest block's outputs instead of
     ``STORED`` A, except on a CPU, where XLA merges the recomputation back
     into the forward pass (README, Speed). Masks add a weighted copy of
     each style layer per region. L-BFGS adds ``LBFGS_WORK`` images per
     ``lbfgs_memory`` (its update's copies of the history) and, with the
     line search in a batch of several members, ``STORED`` A +
     ``BATCHED_PARAMS`` P per member (under ``vmap`` the search holds more)
  F  a forward pass computing targets: ``FORWARD`` L of the largest of the
     content image and the style images (at ``style_scale``)
  C  a checkpoint of the chunk: its members' X gathered and serialised on
     the host (2 copies on a CPU, where the gathered arrays are the
     device's own; 3 elsewhere)
  R  the network's parameters as read, every layer
  I  the images on the host: each at every scale in float32 (content,
     styles at ``style_scale``, masks), which a run keeps, plus the largest
     one's decoding (4 B/px at its own size) and resizing (27 B/px)
  RUNTIME  what the process needs besides: compiling, XLA's runtime

The constants come from XLA's own plan of the step on a CPU and the peak
memory of runs there (README, Memory); ``scripts/memory_check.py`` prints
the estimate against the plan. ``Estimate.step`` (P + n (X + T + W)) is
within ``PLAN_FACTOR`` of that plan (tests/test_memory.py). A GPU or TPU
plans its workspace its own way (not measured here): the check guards
against runs that cannot fit, it does not promise that one will, and
``--nomemory_check`` (``memory_check=False`` in Python) skips it.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np

from nst import images, losses, optim, spec, vgg
from nst.errors import UserError

STORED = 1.5      # activations kept for the backward pass, per output value
WORKING = 3.0     # the backward pass's working buffers, x the largest one
FORWARD = 3.0     # a forward pass alone, x its largest activation
LBFGS_WORK = 5.0  # images of the L-BFGS update's copies, per history pair
BATCHED_PARAMS = 0.75  # x the params, per member of a batch, line search
RUNTIME = 3 << 28      # bytes (0.75 GiB): compiling, XLA's runtime
PLAN_FACTOR = (0.75, 1.5)  # step / XLA's plan, asserted at 32-96 px
F32 = 4
SKIP = ('skip this check with --nomemory_check (memory_check=False in '
        'Python) if the estimate is wrong for this machine')


@dataclasses.dataclass
class Estimate:
  """Bytes a run needs, by part: ``device``, on each device; ``host``, in
  the process's RAM (``cpu``: the device's memory is that RAM too);
  ``step``, what XLA's plan of one step holds (the params once, the chunk's
  images, states and targets, the workspace)."""
  device: dict[str, int]
  host: dict[str, int]
  cpu: bool
  step: int
  local: int = 1  # devices of this process the run uses

  @property
  def on_device(self) -> int:
    return sum(self.device.values())

  @property
  def on_host(self) -> int:
    """The host's part; on a CPU, with every local device's (they all
    use the host's RAM)."""
    return sum(self.host.values()) + (self.on_device * self.local
                                      if self.cpu else 0)


class Shapes:
  """Image sizes from the sources' headers (``images.source_shape``), each
  read once; ``known`` gives some ({source: (height, width)}, e.g. of
  arrays). A source whose header cannot be read counts as a square, the
  largest image of a given longer side."""

  def __init__(self, known: dict[str, tuple[int, int]] | None = None):
    self.native = dict(known or {})

  def own(self, source: str) -> tuple[int, int] | None:
    """The source's own (height, width), None if unknown."""
    if source not in self.native:
      self.native[source] = images.source_shape(source)
    return self.native[source]

  def at(self, source: str, size: int) -> tuple[int, int]:
    """(height, width) of the source read at ``size`` (longer side)."""
    native = self.own(source)
    return images.resized_shape(*native, size) if native else (size, size)


def _kernels(network: str) -> dict[str, tuple[int, int]]:
  """{conv layer: (input channels, output channels)}."""
  out, ins = {}, 3
  for name in vgg.conv_names(network):
    out[name] = ins, vgg.width(name)
    ins = vgg.width(name)
  return out


def _params(network, layers, convolution, dtype, backend, max_side,
            members=1):
  """Bytes of the params as a step runs with them (``vgg.prepare``, for
  ``members`` images per device at once), and as read (every layer)."""
  kernels = _kernels(network)
  size = lambda n: 9 * kernels[n][0] * kernels[n][1]
  read = sum(size(n) + kernels[n][1] for n in kernels)
  used = vgg.up_to(kernels, layers)
  shapes = {'params': {n: {'kernel': jax.ShapeDtypeStruct(
      (3, 3, *kernels[n]), np.float32)} for n in used}}
  fast = vgg.winograd_layers(shapes, convolution, dtype, layers, backend,
                             max_side, members)
  prepared = sum(2 * size(n) + kernels[n][1] for n in used)  # + flipped
  prepared += sum(2 * 4 * size(n) for n in fast)  # 6x6 tiles, both ways
  return prepared * F32, read * F32


def _activations(network, layers, h, w) -> dict:
  """Of an ``h`` x ``w`` image through ``network`` up to the deepest of
  ``layers``, in values: every conv output (``total``), the largest one,
  the blocks' inputs, the largest block's outputs; and ``shapes``, {layer:
  (height, width, channels)} of ``layers``."""
  names = vgg.layer_names(network)
  names = names[:max(names.index(n) for n in layers) + 1]
  total = largest = inputs = 0
  blocks, shapes, channels = {}, {}, 3
  for name in names:
    block = int(name[4])
    if block not in blocks:
      blocks[block] = 0
      inputs += h * w * channels
    if name.startswith('conv'):
      channels = vgg.width(name)
      values = h * w * channels
      total, largest = total + values, max(largest, values)
      blocks[block] += values
    if name in layers:
      shapes[name] = h, w, channels
    if name.startswith('pool'):
      h, w = h // 2, w // 2
  return {'total': total, 'largest': largest, 'inputs': inputs,
          'block': max(blocks.values()), 'shapes': shapes}


def forward_bytes(network: str, layers, h: int, w: int) -> int:
  """Bytes of one float32 forward pass of an ``h`` x ``w`` image through
  ``network`` up to the deepest of ``layers``, every conv output held at
  once: an upper bound for the scripts that only measure."""
  return 4 * _activations(network, layers, h, w)['total']


def check_free(need: int, what: str, fix: str) -> None:
  """A UserError when ``need`` bytes are more than is free where JAX
  computes (``available``: the device's, else the host's; nothing when
  that cannot be known): ``what`` needs them, ``fix`` says how to need
  less."""
  free = available()
  free = free.get('device', free.get('host'))
  if free is not None and need > free[0]:
    raise UserError(f'{what} needs about {size_text(need)} of memory, more '
                    f'than the {size_text(free[0])} available ({free[1]}); '
                    f'{fix}')


def _member(c, shapes: Shapes, layers, backend: str) -> dict:
  """One member's bytes: what it holds on a device (``state``: its image,
  their average and the optimiser's state; ``targets``), its step's
  workspace (``batched``: more in a batch), a forward pass for its
  targets, and on the host the images it keeps ({(source, size): bytes})
  and the reading of its largest one."""
  cpu = backend == 'cpu'
  act = F32 if cpu else np.dtype(spec.COMPUTE_DTYPES[c.compute_dtype]
                                 ).itemsize
  h, w = shapes.at(c.content_image, c.image_size)
  image = h * w * 3 * F32
  opt = optim.get(c.optimizer)
  regions = spec.regions(c)
  a = _activations(c.network, layers, h, w)
  feats = a['shapes']
  style_layers = [l for l in layers if l in c.style_layers]
  targets = sum(term.nbytes(c, feats) for term in losses.TERMS.values())
  stored = (a['inputs'] + STORED * a['block'] if c.remat and not cpu
            else STORED * a['total'])
  workspace = (stored + WORKING * a['largest']) * act
  # Masked moments: a weighted copy of each style layer per region.
  workspace += regions * sum(math.prod(feats[l]) for l in style_layers) * F32
  if opt.history:
    workspace += LBFGS_WORK * c.lbfgs_memory * image
  style = lambda size: max(1, round(c.style_scale * size))
  styles = [shapes.at(s, style(c.image_size)) for s in spec.style_specs(c)]
  widest = max([h * w] + [sh * sw for sh, sw in styles])
  kept = {}
  for size, _ in spec.scale_plan(c):
    kept[c.content_image, size] = math.prod(shapes.at(c.content_image,
                                                      size)) * 3 * F32
    for s in spec.style_specs(c):
      kept[s, style(size)] = math.prod(shapes.at(s, style(size))) * 3 * F32
  kept['masks', c.style_masks, h, w] = regions * h * w * F32
  if c.preserve_colour != 'none':  # the converted copies
    kept['colour', c.content_image, c.style_image, h, w] = (
        h * w + sum(sh * sw for sh, sw in styles)) * 3 * F32
  sources = [c.content_image, *spec.style_specs(c), *spec.mask_specs(c)]
  decoded = max(math.prod(shapes.own(s) or (0, 0)) for s in sources)
  return {'state': (2 + opt.state_images(c.lbfgs_memory)) * image,
          'targets': targets, 'workspace': workspace,
          'searching': opt.linesearch,
          'batched': STORED * a['total'] * act if opt.linesearch else 0,
          'forward': FORWARD * widest * vgg.width('conv1_1') * act,
          'kept': kept, 'reading': decoded * F32 + widest * 27}


def _group_key(c, shapes: Shapes):
  """Members that share a compiled step (and so chunks) have equal keys:
  ``spec.shared`` (every field of ``spec.Program`` but the plan), the
  scale plan's sizes and steps (``spec.scale_plan``) and the content
  image's shape at image_size. The same grouping as ``Program``'s, except
  where ``resolve`` leaves out a coarse scale too small for a thin image:
  members whose plans then agree only after resolving are estimated as
  separate groups."""
  return (tuple(spec.shared(c).values()), tuple(spec.scale_plan(c)),
          shapes.at(c.content_image, c.image_size))


def estimate(configs, *, chunk_size: int = 0, devices: int = 1,
             shapes: Shapes | None = None, backend: str | None = None
             ) -> Estimate:
  """The memory a run of ``configs`` (a checked single-run config, or a
  sweep's member configs) needs on ``backend`` (default JAX's): its
  members grouped as ``nst.sweep.group`` would (``_group_key``) and
  chunked over ``devices`` as ``nst.engine.chunk_members`` does; on the
  device, the chunk that needs most."""
  configs = configs if isinstance(configs, (list, tuple)) else [configs]
  shapes = shapes or Shapes()
  backend = backend or jax.default_backend()
  cpu = backend == 'cpu'
  groups: dict = {}
  for c in configs:
    groups.setdefault(_group_key(c, shapes), []).append(c)
  worst, kept, reading, read = None, {}, 0, {}
  for group in groups.values():
    c = group[0]
    wanted = {l for m in group for l in (*m.content_layers, *m.style_layers)}
    layers = tuple(l for l in vgg.layer_names(c.network) if l in wanted)
    members = sorted((_member(m, shapes, layers, backend) for m in group),
                     key=lambda m: -(m['state'] + m['targets'] +
                                     m['workspace'] + m['batched']))
    for m in members:
      kept.update(m['kept'])
      reading = max(reading, m['reading'])
    size = min(chunk_size or len(group), len(group))
    chunk = members[:-(-size // devices)]  # the largest, on one device
    params, read[c.network, c.weights] = _params(
        c.network, layers, c.convolution,
        spec.COMPUTE_DTYPES[c.compute_dtype], backend,
        max(spec.largest_side(m) for m in group), len(chunk))
    work = sum(m['workspace'] for m in chunk)
    if len(chunk) > 1:
      work += sum(m['batched'] + BATCHED_PARAMS * params * m['searching']
                  for m in chunk)
    held = {'images and optimiser states': sum(m['state'] for m in chunk),
            'targets': sum(m['targets'] for m in chunk)}
    # One at a time: the step's workspace, a forward pass for targets, and
    # (on a CPU, the same RAM) a checkpoint of the chunk, gathered and
    # serialised on the host (2 copies; 3 elsewhere: the gathered arrays
    # are the device's own on a CPU only).
    local = len(chunk) * min(devices, jax.local_device_count())
    checkpoint = (2 if cpu else 3) * local * chunk[0]['state']
    peaks = {'activations of the step': work,
             "the targets' forward pass": max(m['forward'] for m in members),
             **({'a checkpoint': checkpoint} if cpu else {})}
    peak = max(peaks, key=peaks.get)
    # On a CPU the step's replicated params share the prepared ones'
    # buffers; elsewhere they are a second copy (the targets use the first).
    device = {'params': params * (1 if cpu else 2), **held,
              peak: peaks[peak]}
    if worst is None or sum(device.values()) > sum(worst[0].values()):
      worst = device, params + sum(held.values()) + work, checkpoint
  device, step, checkpoint = worst
  host = {'params as read': sum(read.values()),
          'images on the host': sum(kept.values()) + reading,
          'compiling and runtime': RUNTIME,
          **({} if cpu else {'a checkpoint': checkpoint})}
  return Estimate({k: int(v) for k, v in device.items()},
                  {k: int(v) for k, v in host.items()}, cpu, int(step),
                  local=min(devices, jax.local_device_count()))


# --- What is available -------------------------------------------------------

def _read(path: str) -> str | None:
  try:
    return Path(path).read_text()
  except OSError:
    return None


def _cgroup_free() -> int | None:
  """The cgroup's memory limit less its usage (less the page cache it could
  drop, as container runtimes count it); None without a limit."""
  for folder, limit, usage, cache in (
      ('/sys/fs/cgroup/', 'memory.max', 'memory.current', 'inactive_file'),
      ('/sys/fs/cgroup/memory/', 'memory.limit_in_bytes',
       'memory.usage_in_bytes', 'total_inactive_file')):
    text, used = _read(folder + limit), _read(folder + usage)
    if not text or not used or not text.strip().isdigit():
      continue  # 'max': no limit
    if int(text) >= 1 << 60:  # cgroup v1's "no limit"
      return None
    stat = dict(line.split() for line in (_read(folder + 'memory.stat') or
                                          '').splitlines()
                if len(line.split()) == 2)
    return int(text) - int(used) + int(stat.get(cache, 0))
  return None


def available() -> dict[str, tuple[int, str]]:
  """Free memory, {'host': (bytes, where from)} and on a GPU or TPU
  {'device': ...}; a key is left out where it cannot be known.

  host: the smaller of /proc/meminfo's MemAvailable and the cgroup's
  limit less its usage; device: the first local device's ``memory_stats``,
  bytes_limit less bytes_in_use."""
  out = {}
  free = [(int(line.split()[1]) << 10, 'MemAvailable')
          for line in (_read('/proc/meminfo') or '').splitlines()
          if line.startswith('MemAvailable:')]
  cgroup = _cgroup_free()
  if cgroup is not None:
    free.append((max(cgroup, 0), "the cgroup's limit less its usage"))
  if free:
    out['host'] = min(free)
  if jax.default_backend() != 'cpu':
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if 'bytes_limit' in stats:
      out['device'] = (stats['bytes_limit'] - stats.get('bytes_in_use', 0),
                       f'{device.platform.upper()} {device.id}')
  return out


# --- The check ---------------------------------------------------------------

def size_text(n: float) -> str:
  """Bytes as '1.5 GiB' (from 1024 EiB on, as '1.2e+21 B')."""
  for k, unit in enumerate(('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB')):
    if n < 1024 ** (k + 1):
      return f'{n:.0f} B' if k == 0 else f'{n / 1024 ** k:.1f} {unit}'
  return f'{float(n):.1e} B'


def _short(est: Estimate, free) -> list[str]:
  """What does not fit, as phrases; [] if everything does."""
  out = []
  if 'device' in free and not est.cpu and est.on_device > free['device'][0]:
    out.append(f'{size_text(est.on_device)} on each device, where '
               f'{size_text(free["device"][0])} is free '
               f'({free["device"][1]})')
  if 'host' in free and est.on_host > free['host'][0]:
    out.append(f'{size_text(est.on_host)} of RAM, where '
               f'{size_text(free["host"][0])} is available '
               f'({free["host"][1]})')
  return out


def _largest(fits, lo: int, hi: int) -> int | None:
  """The largest whole number in [lo, hi] that ``fits`` (monotone)."""
  if lo > hi or not fits(lo):
    return None
  while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
  return lo


def _remedies(configs, fits, chunk_size: int, cpu: bool) -> list[str]:
  """Single changes with which the run would fit."""
  with_ = lambda **changes: [_View(c, changes) for c in configs]
  out = []
  size = max(c.image_size for c in configs)
  least = max(spec.min_image_side(c) for c in configs)
  found = _largest(lambda s: fits(with_(image_size=s)), least, size - 1)
  if found:
    out.append(f'image_size={found}')
  scale = max(c.style_scale for c in configs)
  found = scale > 1 and _largest(  # styles larger than the output
      lambda k: fits(with_(style_scale=k / 100)), 100,
      math.ceil(scale * 100) - 1)
  if found:
    out.append(f'style_scale={found / 100:g}')
  if any(optim.get(c.optimizer).history for c in configs):
    memory_ = max(c.lbfgs_memory for c in configs)
    found = _largest(lambda m: fits(with_(lbfgs_memory=m)), 1, memory_ - 1)
    if found:
      out.append(f'lbfgs_memory={found}')
  if len(configs) > 1:
    chunk = min(chunk_size or len(configs), len(configs))
    found = _largest(lambda n: fits(configs, n), 1, chunk - 1)
    if found:
      out.append(f'sweep.chunk_size={found}')
  if not cpu and not all(c.remat for c in configs) and fits(
      with_(remat=True)):
    out.append('remat=True')
  return out


class _View:
  """A config with some fields changed (attribute access only)."""

  def __init__(self, config, changes):
    self._config, self._changes = config, changes

  def __getattr__(self, name):
    changes = self.__dict__['_changes']
    return changes[name] if name in changes else getattr(
        self.__dict__['_config'], name)


def largest_chunk(configs, *, devices: int = 1,
                  known: dict[str, tuple[int, int]] | None = None
                  ) -> tuple[int | None, Estimate | None, dict]:
  """The most members per chunk (a multiple of ``devices``, at most the
  members) with which a sweep of ``configs`` fits the memory available
  now, its estimate and that memory (``available``); None if not even
  one member per device fits."""
  shapes, backend, free = Shapes(known), jax.default_backend(), available()
  run = lambda n: estimate(configs, chunk_size=n * devices, devices=devices,
                           shapes=shapes, backend=backend)

  def fits(n):
    try:
      return not _short(run(n), free)
    except OverflowError:
      return False

  found = _largest(fits, 1, -(-len(configs) // devices))
  return ((found * devices, run(found), free) if found else
          (None, None, free))


def check(configs, *, chunk_size: int = 0, devices: int = 1,
          known: dict[str, tuple[int, int]] | None = None) -> Estimate:
  """Raises a UserError if a run of ``configs`` (a config, or a sweep's
  member configs; ``estimate``) needs more memory than is available: one
  line naming the estimate and its largest parts, the memory available,
  and single changes with which it would fit. Reads only the images'
  headers (``known``: sizes of sources that are no files, e.g. arrays) and
  compiles nothing. Returns the estimate."""
  configs = configs if isinstance(configs, (list, tuple)) else [configs]
  for c in configs:
    spec.check(c)
  shapes = Shapes(known)
  backend = jax.default_backend()
  free = available()
  run = lambda cs, chunk=chunk_size: estimate(
      cs, chunk_size=chunk, devices=devices, shapes=shapes, backend=backend)
  try:
    est = run(configs)
  except OverflowError:  # sizes beyond a float's range
    raise UserError('not enough memory: this run needs an estimated more '
                    f'than {size_text(1 << 1023)}; lower image_size, '
                    'style_scale or lbfgs_memory') from None
  short = _short(est, free)
  if not short:
    return est

  def fits(cs, chunk=chunk_size):
    try:
      return not _short(run(cs, chunk), free)
    except OverflowError:
      return False

  parts = sorted({**est.device, **est.host}.items(), key=lambda kv: -kv[1])
  largest = ', '.join(f'{name} {size_text(n)}' for name, n in parts[:3])
  remedies = _remedies(configs, fits, chunk_size, est.cpu)
  fix = (f'it would fit with {" or ".join(remedies)}' if remedies else
         'no single change of image_size, style_scale, lbfgs_memory'
         + (', sweep.chunk_size' if len(configs) > 1 else '')
         + ('' if est.cpu else ' or remat') + ' makes it fit: lower several')
  raise UserError(f'not enough memory: this run needs an estimated '
                  f'{" and ".join(short)} (largest: {largest}); {fix}; '
                  f'{SKIP}')
