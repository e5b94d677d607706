"""The peer's side of scripts/benchmark.py: pastiche 1.6.0 (PyTorch).

Runs in an environment with torch and pastiche (not this project's): it
imports neither jax nor nst. Drives pastiche's own ``PasticheArtist`` --
its VGG-19, losses and torch optimiser -- on the images given, one
``draw()`` (one optimiser step) at a time, and prints one JSON line: the
per-step times, the setup time and the peak memory.

  python peer_pastiche.py --content c.png --style s.png --size 256 \\
      --steps 20 --warmup 3 --device cpu
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
from pastiche.pastiche import PasticheArtist

# This project's default layers, in pastiche's names.
CONTENT = ['block4_conv2']
STYLE = ['block1_conv1', 'block2_conv1', 'block3_conv1', 'block4_conv1',
         'block5_conv1']


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument('--content', required=True)
  p.add_argument('--style', required=True)
  p.add_argument('--size', type=int, required=True)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--device', default='cpu')
  p.add_argument('--optimizer', default='adam')
  a = p.parse_args(argv)
  start = time.perf_counter()
  artist = PasticheArtist(a.content, [a.style], optimizer=a.optimizer,
                          device=a.device, content_layers=CONTENT,
                          style_layers=STYLE, size=a.size, pooling='max')
  sync = torch.cuda.synchronize if a.device.startswith('cuda') else (
      lambda: None)
  sync()
  setup = time.perf_counter() - start
  times = []
  for i in range(a.warmup + a.steps):
    t = time.perf_counter()
    artist.draw()  # reads the loss back with .item(): a synchronisation
    sync()
    if i >= a.warmup:
      times.append(time.perf_counter() - t)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  gpu_peak = (torch.cuda.max_memory_allocated() if a.device.startswith('cuda')
              else None)
  print(json.dumps({
      'impl': 'pastiche', 'size': a.size, 'shape': artist.content_size,
      'median_s': statistics.median(times), 'min_s': min(times),
      'setup_s': setup, 'peak_rss': peak, 'peak_device': gpu_peak,
      'version': f'torch {torch.__version__}', 'threads':
      torch.get_num_threads(), 'loss': artist.loss}))


if __name__ == '__main__':
  sys.exit(main())
