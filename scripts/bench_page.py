"""What report.html costs a run: the time spent building and writing it
against the run's wall time, and how close the time left came.

  python scripts/bench_page.py [--config configs/default.py] \\
      [--set image_size=256 ...] [--record tests/data/default_run_metrics.jsonl]

Runs the config into a temporary workdir (as ``python -m nst.run`` does,
weights fetched once), timing every ``nst.page.Page`` call (its start,
where the input thumbnails are made, and each rewrite). Prints the page's
seconds, the run's wall seconds and their ratio; then, for each log step
after the first scale, the time left the progress line said and the time
the run then took. ``--record`` keeps the run's metrics.jsonl (the time-left
test replays such a recording).
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nst import backend  # noqa: E402
from nst import fields, page, runner  # noqa: E402


def timed(method, spent):
  @functools.wraps(method)
  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return method(*args, **kwargs)
    finally:
      spent.append(time.perf_counter() - start)
  return wrapper


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default=fields.default_path())
  parser.add_argument('--set', nargs='*', default=[],
                      help='FIELD=VALUE overrides (Python literals)')
  parser.add_argument('--record', default='',
                      help="copy the run's metrics.jsonl here")
  args = parser.parse_args()
  config = fields.load(args.config)
  for item in args.set:
    name, value = item.split('=', 1)
    try:
      config[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      config[name] = value
  spent: list[float] = []
  page.Page.__init__ = timed(page.Page.__init__, spent)
  page.Page.write = timed(page.Page.write, spent)
  out = Path(tempfile.mkdtemp(prefix='nst-bench-page-')) / 'run'
  try:
    start = time.perf_counter()
    runner.run(config, out)
    wall = time.perf_counter() - start
    page_s = sum(spent)
    print(f'page: {page_s:.3f} s in {len(spent)} calls; run: {wall:.1f} s; '
          f'{100 * page_s / wall:.2f}% of the wall time; report.html '
          f'{(out / page.NAME).stat().st_size / 1024:.0f} KiB')
    rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text()
            .splitlines()]
    end = rows[-1]['time_s']
    print('step  size  said_left_s  took_s  ratio')
    for r in rows:
      if r.get('left_s') is not None and r is not rows[-1]:
        took = end - r['time_s']
        print(f'{r["step"]:4d}  {r["size"]:4d}  {r["left_s"]:10.1f}  '
              f'{took:6.1f}  {r["left_s"] / took:5.2f}')
    if args.record:
      shutil.copy(out / 'metrics.jsonl', args.record)
      print(f'recorded {args.record}')
  finally:
    shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == '__main__':
  backend.setup()  # before JAX starts
  main()
