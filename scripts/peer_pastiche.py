"""The peer's side of scripts/benchmark.py: pastiche 1.6.0 (PyTorch).

Runs in an environment with torch and pastiche (not this project's): it
imports neither jax nor nst. Drives pastiche's own ``PasticheArtist`` --
its VGG-19, losses and torch optimiser -- on the images given, one
``draw()`` (one optimiser step) at a time. It speaks the benchmark's worker
protocol: a JSON line when ready; then, for each line ``n`` read, n steps
and a JSON line of their times; at an empty line, the peak memory.

  python peer_pastiche.py --content c.png --style s.png --size 256 \\
      --device cpu
"""
import argparse
import json
import resource
import sys
import time

import torch
from pastiche.pastiche import PasticheArtist

# This project's default layers, in pastiche's names.
CONTENT = ['block4_conv2']
STYLE = ['block1_conv1', 'block2_conv1', 'block3_conv1', 'block4_conv1',
         'block5_conv1']


class Peer:
  """pastiche's artist on one size; the worker side of the benchmark."""

  def __init__(self, a):
    start = time.perf_counter()
    self.artist = PasticheArtist(a.content, [a.style], optimizer=a.optimizer,
                                 device=a.device, content_layers=CONTENT,
                                 style_layers=STYLE, size=a.size,
                                 pooling='max')
    self.cuda = a.device.startswith('cuda')
    self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
    self.sync()
    self.setup_s = time.perf_counter() - start
    self.size = a.size

  def steps(self, n):
    times = []
    for _ in range(n):
      t = time.perf_counter()
      self.artist.draw()  # reads the loss back with .item(): a sync
      self.sync()
      times.append(time.perf_counter() - t)
    return times

  def ready(self):
    return {'impl': 'pastiche', 'size': self.size,
            'shape': self.artist.content_size, 'setup_s': self.setup_s,
            'version': f'torch {torch.__version__}',
            'threads': torch.get_num_threads()}

  def final(self):
    return {'peak_rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            * 1024,
            'peak_device': torch.cuda.max_memory_allocated() if self.cuda
            else None, 'loss': self.artist.loss}


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument('--content', required=True)
  p.add_argument('--style', required=True)
  p.add_argument('--size', type=int, required=True)
  p.add_argument('--device', default='cpu')
  p.add_argument('--optimizer', default='adam')
  peer = Peer(p.parse_args(argv))
  # The protocol of scripts/benchmark.py's ``serve`` (repeated here: this
  # script runs in the peer's environment, without this project).
  print(json.dumps(peer.ready()), flush=True)
  for line in sys.stdin:
    if not line.strip():
      break
    print(json.dumps({'times': peer.steps(int(line))}), flush=True)
  print(json.dumps(peer.final()), flush=True)


if __name__ == '__main__':
  sys.exit(main())
