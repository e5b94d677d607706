"""Runs tests/helpers.tiny_sweep in a fresh process (for device counts and
multi-process runs the test process cannot change); writes an npz.

  python tests/sweep_worker.py OUT.npz OPTIMIZER [DEVICES [CHUNK]]
  python tests/sweep_worker.py --multiprocess OUT.npz WORKDIR [STOP [RESUME
      [SHORT]]]

With STOP = N > 0, process 1 (only) asks to stop at its N-th question;
RESUME = 1 resumes the stopped sweep in WORKDIR; SHORT = 1 makes process 1
(only) find 1 byte of memory available.
"""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]


def main(argv):
  from nst import backend
  backend.setup()  # before JAX starts
  if argv[1] == '--multiprocess':
    return multiprocess(*argv[2:])
  out, optimizer = argv[1], argv[2]
  import jax
  import numpy as np
  from helpers import sweep_images, tiny_sweep
  devices = jax.devices()[:int(argv[3])] if len(argv) > 3 else None
  config = tiny_sweep(optimizer)
  if len(argv) > 4:
    config.sweep.chunk_size = int(argv[4])
  results = sweep_images(config, devices)
  np.savez(out, n_devices=len(devices or jax.devices()),
           **{f'image{i}': x for i, (x, _) in results.items()},
           **{f'loss{i}': m['loss'] for i, (_, m) in results.items()})


def multiprocess(out, workdir, stop='0', resume='0', short='0'):
  """One process of a jax.distributed job (env: JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID); runs the sweep with nst.runner.run."""
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  from nst import memory, sweep
  from nst import runner
  from nst.errors import Stopped, UserError
  assert sweep.initialize_distributed('auto')
  import numpy as np
  from helpers import tiny_sweep
  asked = []
  if short == '1' and jax.process_index() == 1:
    memory.available = lambda: {'host': (1, 'a test')}

  def should_stop():
    asked.append(1)
    return jax.process_index() == 1 and len(asked) == int(stop)

  try:
    results = runner.run(tiny_sweep('adam'), Path(workdir),
                              resume=resume == '1',
                              should_stop=should_stop)
  except Stopped as e:
    np.savez(out, process=jax.process_index(), stopped=e.step)
    return
  except UserError as e:
    np.savez(out, process=jax.process_index(), error=str(e))
    return
  np.savez(out, process=jax.process_index(), devices=jax.device_count(),
           written=[r.written for r in results],
           loss=[r.metrics['loss'] for r in results])


if __name__ == '__main__':
  main(sys.argv)
