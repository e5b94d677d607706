"""How long a run takes to exit after SIGTERM (or SIGINT): the signal lands
``--after`` seconds after the first progress line; the script times the
exit and reads what the run says it kept.

  python scripts/stop_latency.py [--size 512] [--log_every 50] \
      [--after 30 60] [--signal TERM] [--weights random] [-- EXTRA FLAGS]

Prints, for each delay, the signal-to-exit time, the exit status, the
run's last line, whether checkpoint.npz is there, and the time in units
of the run's own steps (its steps_per_s at the last log, when it logged
one): the peer measured in the same run.
"""
import argparse
import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def once(size, log_every, after, signum, weights, extra):
  workdir = pathlib.Path(tempfile.mkdtemp()) / 'run'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'default.py'), f'--config.image_size={size}',
       f'--config.log_every={log_every}', f'--config.weights={weights}',
       f'--workdir={workdir}', *extra],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  errors = []
  drain = threading.Thread(target=lambda: errors.extend(proc.stderr))
  drain.start()
  for line in proc.stdout:
    if line.startswith('step'):
      break
  time.sleep(after)
  sent = time.perf_counter()
  proc.send_signal(signum)
  rest = proc.stdout.read()
  proc.wait()
  took = time.perf_counter() - sent
  drain.join()
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').open()]
  rate = rows[-1].get('steps_per_s') or float('nan')
  last = (errors or rest.splitlines() or [''])[-1].strip()
  return took, proc.returncode, last, (workdir / 'checkpoint.npz').is_file(
  ), rate


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--log_every', type=int, default=50)
  parser.add_argument('--after', type=float, nargs='+', default=[30.0])
  parser.add_argument('--signal', choices=['TERM', 'INT'], default='TERM')
  parser.add_argument('--weights', default='random')
  parser.add_argument('extra', nargs='*')
  args = parser.parse_args()
  signum = getattr(signal, 'SIG' + args.signal)
  for after in args.after:
    took, rc, last, ckpt, rate = once(args.size, args.log_every, after,
                                      signum, args.weights, args.extra)
    print(f'{args.size} px, log_every={args.log_every}, SIG{args.signal} '
          f'{after:.0f} s after step 0: exit {rc} after {took:.1f} s '
          f'({took * rate:.1f} steps at {rate:.2f} steps/s); checkpoint '
          f'{"kept" if ckpt else "missing"}; last line: {last}', flush=True)


if __name__ == '__main__':
  main()
