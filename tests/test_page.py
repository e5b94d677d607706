"""report.html (nst.page), the time left (nst.progress) and --help's
listing of the config (nst.fields)."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from helpers import tiny_config
from nst import fields, page, progress, report, runner
from nst.errors import Stopped

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).parent / 'data' / 'default_run_metrics.jsonl'


def _paths(text: str) -> dict[str, str]:
  return dict(re.findall(r'<path data-series="([^"]*)" d="([^"]*)"', text))


def test_chart_paths_follow_the_values():
  series = {'loss': [(0, 12.0), (10, 3.0), (20, 0.5), (30, 0.25)],
            'tv': [(0, 0.0), (10, 2.0), (20, float('nan')), (30, 1.0)]}
  svg = page.chart(series, x_max=40, marks=[(20, '128 px')])
  paths = _paths(svg)
  ax = page.Axes(40, 0.25, 12.0)
  for name, pts in series.items():
    shown = [(x, y) for x, y in pts if y > 0 and math.isfinite(y)]
    drawn = page.points(paths[name])
    assert len(drawn) == len(shown)
    for (x, y), (px, py) in zip(shown, drawn):
      assert px == pytest.approx(ax.x(x), abs=0.01)
      assert ax.value(py) == pytest.approx(y, rel=1e-3)
  assert '128 px' in svg and 'stroke-dasharray' in svg
  # Points far below the rest sit on a floor DECADES below the top.
  low = _paths(page.chart({'c': [(0, 1e-13), (1, 1.0)]}, x_max=1))['c']
  ax = page.Axes(1, 10.0 ** -page.DECADES, 1.0)
  assert ax.value(page.points(low)[0][1]) == pytest.approx(
      10.0 ** -page.DECADES, rel=1e-3)
  assert 'no finite positive values' in page.chart({'a': []}, x_max=5)


def _finished(tmp_path, **overrides):
  config = tiny_config(num_steps=6, save_every=2, log_every=2, **overrides)
  out = tmp_path / 'run'
  runner.run(config, out)
  return out, (out / page.NAME).read_text()


def test_a_finished_run_has_a_page_of_its_inputs_curves_and_config(tmp_path):
  out, text = _finished(tmp_path, image_size=33)
  rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text()
          .splitlines()]
  assert '<b>Finished</b>' in text and 'wrote final.png' in text
  assert 'http-equiv="refresh"' not in text     # it stops reloading
  paths = _paths(text)
  for part in ('loss', 'style', 'tv'):
    values = [r[part] for r in rows if r[part] > 0]
    assert len(page.points(paths[part])) == len(values)
  # Both inputs are shown (embedded), then the final output and the
  # saved steps (linked).
  assert text.count('src="data:image/png;base64,') == 2
  assert 'src="final.png"' in text
  for step_ in (2, 4, 6):
    assert f'src="step_{step_:05d}.png"' in text
  # The fields that differ from configs/default.py come first, with the
  # default beside them.
  assert re.search(r'<th>image_size</th><td>33</td><td class="dim">256'
                   r'</td>', text)
  assert text.index('image_size') < text.index('the whole config')


def test_the_page_says_when_a_run_stopped_and_how_to_go_on(tmp_path,
                                                            monkeypatch):
  config = tiny_config(num_steps=6, log_every=1)
  out = tmp_path / 'run'
  asked = iter(range(100))
  with pytest.raises(Stopped):
    runner.run(config, out, should_stop=lambda: next(asked) >= 3)
  text = (out / page.NAME).read_text()
  assert '<b>Stopped</b>' in text and 'http-equiv="refresh"' not in text
  assert f'--resume --workdir {out}' in text
  # Resumed, the page starts with the stopped run's rows.
  runner.run(config, out, resume=True)
  text = (out / page.NAME).read_text()
  assert '<b>Finished</b>' in text
  assert len(page.points(_paths(text)['loss'])) == 7   # steps 0..6


def test_a_running_page_reloads_and_names_step_rate_and_time_left(tmp_path):
  config = tiny_config(num_steps=40)
  member = type('M', (), {'index': 0, 'config': config, 'values': {},
                          'program': type('P', (), {
                              'total_steps': 40, 'log_every': 1,
                              'plan': [((32, 21, 3), 40)]})()})()
  report_page = page.Page(tmp_path, [member], config)
  report_page.log({'member': 0, 'step': 10, 'size': 32, 'loss': 2.0,
                   'content': 1.0, 'style': 0.5, 'tv': 1.0,
                   'steps_per_s': 4.0, 'left_s': 75.0})
  report_page.write(force=True)
  text = (tmp_path / page.NAME).read_text()
  assert f'http-equiv="refresh" content="{page.RELOAD_S}"' in text
  assert 'step 10/40' in text and '4.00 steps/s' in text
  assert 'about 1:15 left' in text
  report_page.end('diverged', 'the loss became nan by step 12')
  text = (tmp_path / page.NAME).read_text()
  assert '<b>Diverged</b>' in text and 'nan by step 12' in text
  assert 'http-equiv' not in text


def test_odd_file_names_are_escaped(tmp_path):
  odd = tmp_path / 'a <b> & "c"'
  odd.mkdir()
  photo = odd / '<img src=x onerror=alert(1)>.png'
  from PIL import Image
  Image.new('RGB', (40, 30), (200, 100, 50)).save(photo)
  config = tiny_config(num_steps=2, content_image=str(photo))
  runner.run(config, odd / 'run<1>')
  text = (odd / 'run<1>' / page.NAME).read_text()
  assert '<img src=x' not in text and 'onerror=alert(1)&gt;' in text
  assert 'run&lt;1&gt;' in text and '<h1>run<1>' not in text


def test_a_sweep_page_has_a_line_per_member_and_the_grid(tmp_path):
  config = tiny_config(num_steps=3, save_every=3)
  config.sweep = ml_collections.ConfigDict(
      {'axes': {'style_weight': (1.0, 2.0, 4.0)}, 'cols': 'style_weight'})
  out = tmp_path / 'sweep'
  runner.run(config, out)
  text = (out / page.NAME).read_text()
  paths = _paths(text)
  for k, w in enumerate((1, 2, 4)):
    assert f'#{k} style_weight={w}' in paths
  assert '<b>Finished</b>' in text and '3 of 3 members finished' in text
  # A 1-D sweep's corner names its one axis.
  assert '<th>style_weight</th><th>1</th><th>2</th><th>4</th>' in text
  for k in range(3):
    assert f'src="members/{k:04d}.png"' in text
  assert report.corner('', 'style_weight') == 'style_weight'
  assert report.corner('a', 'b') == 'a \\ b'
  index = (out / 'index.html').read_text()
  assert '- \\' not in index and '<th>style_weight</th>' in index


def test_time_left_adds_later_scales_by_pixel_count():
  plan = [((16, 16, 3), 10), ((32, 32, 3), 10), ((64, 64, 3), 5)]
  assert [progress.scale_of(plan, s) for s in (0, 10, 11, 20, 21, 25)] == [
      0, 0, 1, 1, 2, 2]
  # Step 0 logged at 1 s; steps 2 and 4 at 5 and 6 s: 2 steps/s, so step 0
  # ran from 4 s (a 3 s start). 6 steps left at 2/s; then 10 steps at
  # 4 ** 0.75 times the cost, and 5 at 16 ** 0.75, each after a 3 s start.
  history = [(0, 1.0), (2, 5.0), (4, 6.0)]
  assert progress.estimate(plan, history[:2]) is None   # one rate point
  left, whole = progress.estimate(plan, history)
  p = progress.EXPONENT
  assert left == pytest.approx(6 / 2 + 3 + 10 * 4 ** p / 2 + 3
                               + 5 * 16 ** p / 2)
  assert whole == pytest.approx((10 + 10 * 4 ** p + 5 * 16 ** p) / 2)
  # In scale 1, at 0.5 steps/s against scale 0's 2: the cost grows as
  # pixels ** 1 (4x the pixels, 4x slower), measured, not assumed.
  history += [(10, 9.0), (12, 14.0), (14, 18.0)]
  left, _ = progress.estimate(plan, history)
  start_s = (14.0 - 2 / 0.5) - 9.0      # began at 10 s, 9 s after step 10
  assert left == pytest.approx(6 / 0.5 + start_s + 5 * 4 / 0.5)
  assert progress.clock(75) == '1:15' and progress.clock(3725) == '1:02:05'


@pytest.mark.parametrize('recording, plan, first, checks', [
    # The default before min_scale_size: 150 steps at 64 px, 150 at 128,
    # 70 at 256; checked after the first scale.
    (RECORDED, [((43, 64, 3), 150), ((85, 128, 3), 150),
                ((170, 256, 3), 70)], 150, 18),
    # The default now: 300 steps at 128 px, 70 at 256; checked from step 20
    # on, while the 256 px steps' cost is still a guess.
    (RECORDED.with_name('default_run_metrics_128_256.jsonl'),
     [((85, 128, 3), 300), ((170, 256, 3), 70)], 10, 33)])
def test_time_left_on_a_recorded_default_run_is_within_a_quarter(
    recording, plan, first, checks):
  """A default run (256 px, pretrained weights, this project's 2-core
  CPU), as its metrics.jsonl recorded it (scripts/bench_page.py --record):
  replayed log step by log step, every estimate after step ``first`` is
  within 25% of the time the run then took."""
  rows = [json.loads(l) for l in recording.read_text().splitlines()]
  assert sorted({r['size'] for r in rows}) == [max(s[:2]) for s, _ in plan]
  end, history, checked = rows[-1]['time_s'], [], 0
  for r in rows[:-1]:
    history.append((r['step'], r['time_s']))
    guess = progress.estimate(plan, history)
    if r['step'] <= first or guess is None:
      continue
    truth = end - r['time_s']
    assert abs(guess[0] - truth) <= 0.25 * truth, (r['step'], guess, truth)
    checked += 1
  assert checked >= checks


def test_a_not_finite_member_shows_in_the_progress_line():
  rows = [{'step': 5, 'size': 32, 'loss': 1.0}] * 3
  text = progress.line(total_steps=10, scales=1, chunk_size=3, named=True,
                       rows=rows, totals=np.array([1.0, np.nan, 3.0]),
                       rate=2.0, left_s=30.0, chunks=1)
  assert 'median 2.0000e+00' in text and '1 not finite' in text
  assert '0:30 left' in text and '(3 members)' in text


def test_every_config_field_is_documented_once_in_its_group():
  groups = fields.read()
  names = [f.name for g in groups for f in g.fields]
  assert sorted(names) == sorted(fields.load().keys())
  assert len(names) == len(set(names))
  undocumented = [f.name for g in groups for f in g.fields if not f.doc]
  assert undocumented == []
  by_name = {f.name: f.doc for g in groups for f in g.fields}
  assert by_name['image_size'] == 'longer side of the output, px'
  assert by_name['style_layer_trims'].startswith('Per style layer')
  assert [g.name for g in groups][:2] == ['Images', 'Style controls']


def test_documented_reads_comments_where_they_are():
  source = '''
def get_config():
  c = ml_collections.ConfigDict()
  # --- First: the group's note.
  c.a = 1        # a's meaning,
                 # continued
  # b's meaning, above it
  c.b = 'x#y'

  # --- Second
  c.c = (1,
         2)
  return c
'''
  groups = fields.documented(source)
  assert [(g.name, g.note) for g in groups] == [
      ('First', "the group's note."), ('Second', '')]
  assert [(f.name, f.doc) for g in groups for f in g.fields] == [
      ('a', "a's meaning, continued"), ('b', "b's meaning, above it"),
      ('c', '')]


def test_help_lists_every_field_with_its_value_and_exits_0():
  env = {'PYTHONPATH': str(ROOT), 'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin'}
  result = subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config.style_weight=7', '--help'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  text = result.stdout
  for name in fields.load().keys():
    assert f'\n  {name} = ' in text, name
  assert '  style_weight = 7.0\n      beta: the strength.' in text
  assert '--workdir' in text and '--resume' in text
  assert '(default: true)' in text and "'" not in text.split('(--config')[0]
  assert text.index('Images') < text.index('Optimisation')


def test_a_sweep_page_names_the_member_running_now(tmp_path):
  config = tiny_config(num_steps=3)
  config.sweep = ml_collections.ConfigDict(
      {'axes': {'style_weight': (1.0, 2.0)}, 'chunk_size': 1})
  members = [type('M', (), {'index': k, 'config': config,
                            'values': {'style_weight': w},
                            'coords': {'style_weight': k},
                            'program': type('P', (), {
                                'total_steps': 3, 'log_every': 1,
                                'plan': [((21, 32, 3), 3)]})()})()
             for k, w in enumerate((1.0, 2.0))]
  report_page = page.Page(tmp_path, members, config,
                          axes={'style_weight': (1.0, 2.0)})
  row = {'size': 32, 'loss': 2.0, 'content': 1.0, 'style': 0.5, 'tv': 1.0,
         'steps_per_s': 5.0, 'left_s': 4.0}
  report_page.log({**row, 'member': 0, 'step': 3, 'left_s': 9.0})
  report_page.log({**row, 'member': 1, 'step': 1})
  report_page.write(force=True)
  text = (tmp_path / page.NAME).read_text()
  assert 'step 1/3' in text and 'about 0:04 left' in text
  assert '#1 running: step 1' in text


def test_a_page_that_fails_costs_the_run_nothing(tmp_path, monkeypatch,
                                                 capsys):
  def broken(self):
    raise KeyError('a bug of the page')
  monkeypatch.setattr(page.Page, 'render', broken)
  config = tiny_config(num_steps=3)
  [result] = runner.run(config, tmp_path / 'run')
  assert result.status == 'ok' and (tmp_path / 'run' / 'final.png').is_file()
  notes = [l for l in capsys.readouterr().out.splitlines()
           if l.startswith('note:')]
  assert notes == ["note: report.html is no longer written (KeyError: 'a "
                   "bug of the page')"]
  # Without configs/default.py to compare with, every field is shown.
  monkeypatch.undo()
  monkeypatch.setattr(page.fields, 'default_path', lambda: '/nonexistent.py')
  runner.run(config, tmp_path / 'elsewhere')
  text = (tmp_path / 'elsewhere' / page.NAME).read_text()
  assert '<b>Finished</b>' in text and '<th>style_weight</th>' in text


def test_a_sweep_of_several_plans_spans_the_longest(tmp_path):
  config = tiny_config(num_steps=2, log_every=1)
  config.sweep = ml_collections.ConfigDict(
      {'axes': {'num_steps': (2, 6)}})
  runner.run(config, tmp_path / 'sweep')
  text = (tmp_path / 'sweep' / page.NAME).read_text()
  svg = text[text.index('<svg'):text.index('</svg>')]
  drawn = _paths(svg)
  ax_right = page.Axes(6, 1, 2).x(6)
  assert max(x for x, _ in page.points(drawn['#1 num_steps=6'])) == (
      pytest.approx(ax_right, abs=0.01))
  assert max(x for x, _ in page.points(drawn['#0 num_steps=2'])) < ax_right
  assert '>6</text>' in svg     # the axis ends at the longest plan


def test_long_curves_are_thinned_keeping_both_ends():
  points = [(k, 1.0 + k) for k in range(5000)]
  thinned = page.thin(points)
  assert len(thinned) == page.POINTS
  assert thinned[0] == points[0] and thinned[-1] == points[-1]
  assert page.thin(points[:10]) == points[:10]


def test_a_pruned_history_gives_the_same_estimates():
  rows = [json.loads(l) for l in RECORDED.read_text().splitlines()]
  plan = [((43, 64, 3), 150), ((85, 128, 3), 150), ((170, 256, 3), 70)]
  whole, pruned = [], []
  for r in rows:
    whole.append((r['step'], r['time_s']))
    pruned = progress.prune(plan, pruned + [whole[-1]])
    assert len(pruned) <= 8
    assert progress.estimate(plan, pruned) == progress.estimate(plan, whole)
