"""scripts/benchmark.py's own side runs and reports (the peer needs torch,
which is not a dependency; it is exercised by running the benchmark)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_times_our_step_without_a_peer(tmp_path):
  out = tmp_path / 'rows.json'
  result = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'benchmark.py'), '--sizes',
       '32', '--steps', '2', '--warmup', '1', '--no-peer', '--json',
       str(out)], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr
  (row,) = json.loads(out.read_text())
  ours = row['ours']
  assert ours['size'] == 32 and ours['shape'] == [32, 32]
  assert 0 < ours['median_s'] < 60 and ours['compile_s'] > 0
  assert ours['peak_rss'] > 0 and ours['backend'] == 'cpu'
  assert '    32 ' in result.stdout


FAKE_PEER = """#!{python}
# Speaks scripts/benchmark.py's worker protocol; runs out of memory at 48 px.
import json, sys
if sys.argv[sys.argv.index('--size') + 1] == '48':
  sys.exit('RESOURCE_EXHAUSTED: could not allocate 8 GiB')
print(json.dumps({{'version': 'fake 0', 'threads': 1}}), flush=True)
for line in sys.stdin:
  if not line.strip():
    break
  print(json.dumps({{'times': [0.5] * int(line)}}), flush=True)
print(json.dumps({{'peak_rss': 2**20}}), flush=True)
"""


@pytest.mark.slow
def test_a_size_whose_worker_fails_is_reported_and_the_rest_measured(
    tmp_path):
  peer = tmp_path / 'peer'
  peer.write_text(FAKE_PEER.format(python=sys.executable))
  peer.chmod(0o755)
  out = tmp_path / 'rows.json'
  result = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'benchmark.py'), '--sizes',
       '48', '32', '--rounds', '1', '--steps', '1', '--warmup', '0',
       '--peer-python', str(peer), '--json', str(out)],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stdout + result.stderr
  assert ('48 px: peer failed: RESOURCE_EXHAUSTED: could not allocate '
          '8 GiB (out of memory)') in result.stdout
  assert 'failed: 48 px' in result.stdout
  (row,) = json.loads(out.read_text())  # 32 px, both sides
  assert row['ours']['size'] == 32 and row['peer']['median_s'] == 0.5
  assert '    32 ' in result.stdout


@pytest.mark.slow
def test_our_side_steps_with_params_already_on_the_device():
  # Host (NumPy) params would be copied to an accelerator at every timed
  # step; weights.random_params returns NumPy arrays.
  import jax
  benchmark = load_script('benchmark')
  ours = benchmark.Ours(32, 'skimage:astronaut', 'nst:swirls', 'float32',
                        False)
  leaves = jax.tree.leaves(ours.params)
  assert leaves and all(isinstance(v, jax.Array) for v in leaves)


def test_bench_batch_one_counts_a_steps_flops_as_direct_convolutions():
  flops = load_script('bench_batch_one').step_flops
  # conv1_1 on 32x20 RGB: 32*20 positions x 3 in x 64 out x 9 taps.
  conv1_1 = 32 * 20 * 3 * 64 * 9
  assert flops('vgg19', ('relu1_1',), (32, 20, 3)) == 4 * conv1_1
  # To relu2_1: conv1_2 (64 -> 64) at 32x20, conv2_1 (64 -> 128) at 16x10.
  to_2_1 = conv1_1 + 32 * 20 * 64 * 64 * 9 + 16 * 10 * 64 * 128 * 9
  assert flops('vgg19', ('relu2_1', 'relu1_1'), (32, 20, 3)) == 4 * to_2_1
  # VGG-19 to conv5_1 at 224 px, block by block: 224^2 (3*64 + 64*64),
  # 112^2 (64*128 + 128^2), 56^2 (128*256 + 3*256^2), 28^2 (256*512 +
  # 3*512^2) and 14^2 512^2 positions x channel pairs, 9 taps each.
  blocks = (1_936_392_192 + 2_774_532_096 + 6_473_908_224 + 6_473_908_224
            + 462_422_016)
  assert flops('vgg19', ('relu5_1',), (224, 224, 3)) == 4 * blocks
