"""report.html: the page a user watches a run or a sweep on as it forms.

One static file in the workdir, rewritten (atomically) at most every
``INTERVAL_S`` seconds from the first log step on, and at the end. While
the run is alive it reloads itself every ``RELOAD_S`` seconds; once the run
has finished, stopped, diverged or failed it stops reloading and says so.
Opened with ``file://``, it needs no server and nothing beyond the browser.

A run's page: its state (running, with the step, steps/s, the time
elapsed and the time left; or how it ended and what to do next), the
content and style images, the latest output and a strip of the saved
steps, the loss curves (total, content, style, tv on a log scale, the
coarse-to-fine scales marked) drawn as inline SVG from the metrics rows,
and the config, the fields that differ from configs/default.py first.
A sweep's page has one chart per loss with a line per member, and the
members on the sweep's grid (rows x cols, one table per value of any other
axis), each with its latest image, state and time.

Nothing here runs JAX; ``Page`` is fed by ``nst.runner.Writer``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import time
import types
from pathlib import Path
from typing import Any, Iterable, Sequence

import ml_collections
from PIL import Image

from nst import fields, images, progress, report

NAME = 'report.html'
INTERVAL_S = 1.0   # the least time between two rewrites while running
SHARE = 0.02       # ... and at most this share of the time spent on them
POINTS = 300       # a curve drawn with more log steps is thinned to this
LEGEND = 24        # members named in a sweep chart's legend, at most
RELOAD_S = 5       # the browser reloads a running run's page this often
COLOURS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e',
           '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22')
THUMB = 200        # px, the longer side of the input images shown
STRIP = 12         # saved steps shown in a run's strip, at most
DECADES = 5        # a chart's values span at most this many powers of 10


# --- Charts -------------------------------------------------------------------

class Axes:
  """The map from (step, value) to SVG coordinates of one chart: linear
  steps 0..``x_max``, values on a log scale between ``lo`` and ``hi``."""

  def __init__(self, x_max: float, lo: float, hi: float, *,
               width: int = 560, height: int = 220, margin: int = 48):
    self.x_max, self.width, self.height, self.margin = (
        max(x_max, 1), width, height, margin)
    if hi <= lo:
      lo, hi = lo / 2, hi * 2
    self.lo, self.hi = math.log10(lo), math.log10(hi)

  def x(self, step: float) -> float:
    span = self.width - self.margin - 12
    return self.margin + span * step / self.x_max

  def y(self, value: float) -> float:
    span = self.height - 36
    frac = (math.log10(value) - self.lo) / (self.hi - self.lo)
    return 12 + span * (1 - frac)

  def value(self, y: float) -> float:
    """The value at height ``y`` (``y``'s inverse)."""
    span = self.height - 36
    return 10 ** (self.lo + (1 - (y - 12) / span) * (self.hi - self.lo))


def chart(series: dict[str, Sequence[tuple[float, float]]], *, x_max: float,
          marks: Sequence[tuple[float, str]] = (), title: str = '',
          colours: dict[str, str] | None = None) -> str:
  """An inline SVG line chart: one path per series (its name in the path's
  ``data-series``; points whose value is not positive and finite are left
  out, those more than ``DECADES`` powers of 10 below the largest sit at
  that floor), log-scale values, ``marks`` as dashed vertical lines with labels
  (e.g. where a scale starts)."""
  usable = {k: [(x, y) for x, y in pts if y > 0 and math.isfinite(y)]
            for k, pts in series.items()}
  values = [y for pts in usable.values() for _, y in pts]
  e = html.escape
  if not values:
    return (f'<figure class="chart"><figcaption>{e(title)}</figcaption>'
            '<p class="empty">no finite positive values yet</p></figure>')
  # At most DECADES below the largest value (a loss that starts at 0
  # plus rounding would squash the rest); lower points sit on the floor.
  floor = max(min(values), max(values) * 10.0 ** -DECADES)
  ax = Axes(x_max, floor, max(values))
  colours = colours or {}
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{ax.width}" '
         f'height="{ax.height}" viewBox="0 0 {ax.width} {ax.height}" '
         f'role="img" aria-label="{e(title)}">',
         f'<rect x="{ax.margin}" y="12" width="{ax.width - ax.margin - 12}"'
         f' height="{ax.height - 36}" fill="none" stroke="#ccc"/>']
  # Gridlines at the powers of 10, and at 2x and 5x them when the chart
  # spans fewer than three.
  steps = (1, 2, 5) if ax.hi - ax.lo < 3 else (1,)
  for power in range(math.floor(ax.lo), math.ceil(ax.hi) + 1):
    for factor in steps:
      value = factor * 10.0 ** power
      if not ax.lo - 1e-9 <= math.log10(value) <= ax.hi + 1e-9:
        continue
      y = ax.y(value)
      out.append(f'<line x1="{ax.margin}" x2="{ax.width - 12}" y1="{y:.1f}"'
                 f' y2="{y:.1f}" stroke="#eee"/><text x="{ax.margin - 4}" '
                 f'y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
  for end, anchor in ((0, 'start'), (ax.x_max, 'end')):
    out.append(f'<text x="{ax.x(end):.1f}" y="{ax.height - 8}" '
               f'text-anchor="{anchor}">{int(end)}</text>')
  for x, label in marks:
    out.append(f'<line x1="{ax.x(x):.1f}" x2="{ax.x(x):.1f}" y1="12" '
               f'y2="{ax.height - 24}" stroke="#999" stroke-dasharray="4 3"/>'
               f'<text x="{ax.x(x) + 3:.1f}" y="24">{e(label)}</text>')
  for k, (name, pts) in enumerate(usable.items()):
    if not pts:
      continue
    colour = colours.get(name, COLOURS[k % len(COLOURS)])
    d = ' '.join(f'{"M" if i == 0 else "L"}{ax.x(x):.2f},'
                 f'{ax.y(max(y, floor)):.2f}'
                 for i, (x, y) in enumerate(pts))
    out.append(f'<path data-series="{e(name)}" d="{d}" fill="none" '
               f'stroke="{colour}" stroke-width="1.6"/>')
  out.append('</svg>')
  named = [n for n in usable if usable[n]]
  legend = ''.join(
      f'<span><i style="background:{colours.get(n, COLOURS[k % len(COLOURS)])}'
      f'"></i>{e(n)}</span>' for k, n in enumerate(named[:LEGEND]))
  if len(named) > LEGEND:
    legend += f'<span>and {len(named) - LEGEND} more</span>'
  return (f'<figure class="chart"><figcaption>{e(title)}</figcaption>'
          f'{"".join(out)}<div class="legend">{legend}</div></figure>')


def points(path_d: str) -> list[tuple[float, float]]:
  """The (x, y) points of a chart path's ``d`` (``M x,y L x,y ...``)."""
  return [tuple(map(float, p[1:].split(','))) for p in path_d.split()]


# --- Pieces -------------------------------------------------------------------

def thumbnail(spec: str, options: dict) -> str:
  """An input image as a data: URL (PNG, longer side ``THUMB`` px); '' if
  it cannot be read."""
  try:
    rgb = images.read_rgb(spec, **options)
  except Exception:  # pylint: disable=broad-except
    return ''        # (the run checked its inputs; a page never fails it)
  picture = Image.fromarray(rgb)
  picture.thumbnail((THUMB, THUMB))
  buffer = io.BytesIO()
  picture.save(buffer, format='PNG')
  return 'data:image/png;base64,' + base64.b64encode(
      buffer.getvalue()).decode()


def scale_marks(plan) -> list[tuple[float, str]]:
  """Where each scale of a plan ((shape, steps) pairs) starts, labelled
  with its size, if there is more than one."""
  if len(plan) < 2:
    return []
  marks, done = [], 0
  for shape, steps in plan:
    marks.append((done, f'{max(shape[:2])} px'))
    done += steps
  return marks


def config_table(config, default) -> str:
  """The fields that differ from the default (value and default), then all
  of the config as JSON, folded."""
  e = html.escape
  rows = ''.join(f'<tr><th>{e(name)}</th><td>{e(fields.show(value))}</td>'
                 f'<td class="dim">{e(fields.show(base))}</td></tr>'
                 for name, value, base in fields.differences(config, default))
  table = (f'<table class="config"><tr><th>field</th><th>value</th>'
           f'<th>default</th></tr>{rows}</table>' if rows else
           '<p>Every field has its default value.</p>')
  return (f'<h2>Config</h2>{table}<details><summary>the whole config'
          f'</summary><pre>{e(config.to_json(indent=2))}</pre></details>')


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px}
.state{font-size:15px;margin:4px 0} .running{color:#1a5fb4}
.finished{color:#26734d} .stopped{color:#9c6500} .diverged,.failed{color:#b00}
.dim{color:#777} .stale{color:#b00;font-weight:bold}
.inputs,.strip{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-end}
figure{margin:0} figcaption{font-size:12px;color:#555}
.inputs img{max-height:200px} .inputs .latest img{max-height:none;height:288px}
.strip img{height:96px} .chart svg text{font-size:10px;fill:#555}
.charts{display:flex;flex-wrap:wrap;gap:16px} .chart{max-width:560px}
.legend span{margin-right:10px;font-size:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:3px}
table{border-collapse:collapse} td,th{padding:3px 8px;vertical-align:top;
text-align:left;font-size:13px} table.config td,table.config th{
border-bottom:1px solid #eee} .grid td{border:1px solid #eee}
.grid img{width:160px;display:block}
pre{font-size:12px;background:#f6f6f6;padding:8px}
"""

# Says so when a page that should be reloading has not been rewritten
# for a while (the run was killed, or its machine went away).
STALE_JS = """<script>
(function(){var b=document.body,t=+b.dataset.updated,s=+b.dataset.stale;
if(!s)return;var age=Date.now()/1000-t;if(age>s){var p=document.
getElementById('stale');p.textContent='No update for '+Math.round(age/60)+
' min: the run may have been killed without a word (its checkpoint, if '+
'any, continues it with --resume).';}})();</script>"""


def document(title: str, body: str, *, live: bool, stale_s: float) -> str:
  """The page around ``body``: reloading every ``RELOAD_S`` s if ``live``,
  warning when it has not been rewritten for ``stale_s`` seconds."""
  e = html.escape
  now = time.time()
  reload = (f'<meta http-equiv="refresh" content="{RELOAD_S}">' if live
            else '')
  stamp = time.strftime('%H:%M:%S', time.localtime(now))
  return (f'<!doctype html><html><head><meta charset="utf-8">{reload}'
          f'<title>{e(title)}</title><style>{STYLE}</style></head>'
          f'<body data-updated="{now:.0f}" data-stale="'
          f'{stale_s if live else 0:.0f}">{body}<p class="dim">page written '
          f'{stamp}</p><p id="stale" class="stale"></p>{STALE_JS}'
          '</body></html>\n')


# --- The page -----------------------------------------------------------------

class Page:
  """The state of one workdir's report.html, and its writing.

  ``members``: the run's ``spec.Member``s (one for a single run);
  ``config``: the config as given; ``axes`` (a sweep's, ``sweep.axes``)
  with ``settings`` (its section, for rows, cols and zip)."""

  def __init__(self, folder: Path, members: list, config, *, axes=None,
               settings=None, options: dict | None = None):
    self.folder, self.members, self.config = folder, members, config
    self.axes, self.settings = axes, settings
    self.default = _default_config()
    self.by_index = {m.index: m for m in members}
    self.rows: dict[int, list[dict]] = {m.index: [] for m in members}
    self.saved: dict[int, list[tuple[int, str]]] = {
        m.index: [] for m in members}
    self.results: dict[int, Any] = {}
    self.state, self.note = 'running', ''
    self.last: dict | None = None   # the latest row logged
    self.started, self.written, self.spent_s = time.time(), 0.0, 0.0
    self.last_cost = 0.0
    specs = []
    for m in members:
      for field in ('content_image', 'style_image'):
        for spec in str(m.config[field]).split(','):
          if (field, spec) not in specs:
            specs.append((field, spec))
    self.inputs = [(field, spec, thumbnail(spec, options or {}))
                   for field, spec in specs[:8]]

  # What the run hands out.
  def log(self, row: dict) -> None:
    self.rows.setdefault(row.get('member', 0), []).append(row)
    self.last = row

  def save(self, index: int, step_: int, relative: str) -> None:
    self.saved.setdefault(index, []).append((step_, relative))

  def result(self, result) -> None:
    self.results[result.member.index] = result

  def end(self, state: str, note: str = '') -> None:
    """The run is over: 'finished', 'stopped', 'diverged' or 'failed'."""
    self.state, self.note = state, note
    self.write(force=True)

  def write(self, force: bool = False) -> None:
    """Rewrites the page unless ``force`` is False and it was rewritten
    less than ``INTERVAL_S`` s ago, or less than ``SHARE`` of the time
    since was spent rewriting it (a large sweep's page costs more)."""
    start = time.perf_counter()
    wait = max(INTERVAL_S, self.last_cost / SHARE)
    if not force and start - self.written < wait:
      return
    text = self.render()
    images.write_atomic(self.folder / NAME, text.encode())
    self.written = time.perf_counter()
    self.last_cost = self.written - start
    self.spent_s += self.last_cost

  # What it shows.
  def state_line(self) -> str:
    e = html.escape
    elapsed = progress.clock(time.time() - self.started)
    if self.state != 'running':
      return (f'<p class="state {self.state}"><b>{self.state.capitalize()}'
              f'</b> ({elapsed} in this process): {e(self.note)}</p>')
    last = self.last
    running = self.by_index.get(last['member'] if last else None,
                                self.members[0])
    total = running.program.total_steps
    if last is None:
      return (f'<p class="state running"><b>Running</b>: starting '
              f'({elapsed} elapsed)</p>')
    bits = [f'step {last["step"]}/{total}', f'{last["size"]} px']
    if last.get('steps_per_s'):
      bits.append(f'{last["steps_per_s"]:.2f} steps/s')
    bits.append(f'{elapsed} elapsed')
    if last.get('left_s') is not None:
      bits.append(f'about {progress.clock(last["left_s"])} left')
    if len(self.members) > 1:
      bits.append(f'{len(self.results)} of {len(self.members)} members '
                  'done')
    return (f'<p class="state running"><b>Running</b>: '
            f'{" · ".join(bits)}</p>')

  def stale_s(self) -> float:
    """How long without a rewrite counts as a dead run: ten log intervals,
    at least ten minutes (compiling a new scale of a large batch takes
    minutes, and writes nothing meanwhile)."""
    last = self.last
    rate = last.get('steps_per_s') if last else None
    every = self.members[0].program.log_every or 10
    return max(600.0, 10 * every / rate) if rate else 600.0

  def render(self) -> str:
    e = html.escape
    sweep = self.axes is not None
    name = self.folder.resolve().name
    title = f'nst {"sweep" if sweep else "run"} {name}: {self.state}'
    body = [f'<h1>{e(name)}</h1>', self.state_line()]
    if sweep:
      body.append(f'<p>{len(self.members)} members over ' + ', '.join(
          f'{e(a)} ({len(v)} values)' for a, v in self.axes.items()) +
                  '</p>')
    body.append(self.sweep_html() if sweep else self.run_html())
    body.append(config_table(self.config, self.default))
    return document(title, '\n'.join(body), live=self.state == 'running',
                    stale_s=self.stale_s())

  def inputs_html(self) -> str:
    """The input images as figures (content, style)."""
    e = html.escape
    return ''.join(
        f'<figure><img src="{url}" alt="{e(spec)}"><figcaption>'
        f'{e(field.split("_")[0])}: {e(report.text(spec))}</figcaption>'
        '</figure>' for field, spec, url in self.inputs if url)

  def curves(self, index: int) -> dict[str, list[tuple[int, float]]]:
    return {k: thin([(r['step'], r[k]) for r in self.rows.get(index, ())
                     if k in r]) for k in report.loss_columns()}

  def run_html(self) -> str:
    e = html.escape
    m = self.members[0]
    result = self.results.get(m.index)
    saved = self.saved.get(m.index, [])
    latest = (result.image if result is not None and result.image else
              saved[-1][1] if saved else '')
    caption = ('final' if result is not None and result.image else
               f'step {saved[-1][0]}' if saved else '')
    if saved and not (result is not None and result.image):
      sizes = [r['size'] for r in self.rows.get(m.index, ())
               if r['step'] <= saved[-1][0] and 'size' in r]
      caption += f' ({sizes[-1]} px, shown larger)' if sizes else ''
    out = ['<div class="inputs">', self.inputs_html()]
    if latest:
      out.append(f'<figure class="latest"><a href="{e(latest)}"><img '
                 f'src="{e(latest)}"></a><figcaption>output: {e(caption)}'
                 '</figcaption></figure>')
    else:
      out.append('<p class="dim">no output saved yet (one every '
                 'save_every steps)</p>')
    out.append('</div><h2>Losses</h2>')
    out.append(chart(self.curves(m.index), x_max=m.program.total_steps,
                     marks=scale_marks(m.program.plan),
                     title='loss: the weighted total; '
                     f'{", ".join(report.loss_columns()[1:])}: each term '
                     'unweighted; log scale, by step'))
    if len(saved) > 1:
      out.append('<h2>Saved steps</h2>')
      pick = sorted({round(k * (len(saved) - 1) / (STRIP - 1))
                     for k in range(STRIP)}) if len(saved) > STRIP else (
                         range(len(saved)))
      out.append('<div class="strip">' + ''.join(
          f'<figure><a href="{e(saved[k][1])}"><img src="{e(saved[k][1])}">'
          f'</a><figcaption>step {saved[k][0]}</figcaption></figure>'
          for k in pick) + '</div>')
    return '\n'.join(out)

  def member_label(self, m) -> str:
    return f'#{m.index} ' + ', '.join(
        f'{a}={report.text(v)}' for a, v in m.values.items())

  def sweep_html(self) -> str:
    plans = {tuple(m.program.plan) for m in self.members}
    # Groups with other plans: the longest sets the width, and no scale
    # is marked unless every member has the same.
    x_max = max(m.program.total_steps for m in self.members)
    marks = scale_marks(self.members[0].program.plan) if len(plans) == 1 \
        else []
    out = ['<h2>Inputs</h2><div class="inputs">', self.inputs_html(),
           '</div><h2>Losses</h2><div class="charts">']
    colours = {self.member_label(m): COLOURS[k % len(COLOURS)]
               for k, m in enumerate(self.members)}
    for part in report.loss_columns():
      out.append(chart(
          {self.member_label(m): self.curves(m.index)[part]
           for m in self.members},
          x_max=x_max, marks=marks, title=f'{part}, a line per member',
          colours=colours))
    out.append('</div><h2>Members</h2>')
    out.append(self.grid_html())
    if self.state == 'finished':
      out.append('<p><a href="index.html">contact sheets</a> &middot; '
                 '<a href="results.csv">results.csv</a></p>')
    return '\n'.join(out)

  def grid_html(self) -> str:
    e = html.escape
    s = self.settings
    rows, cols = (s.rows, s.cols) if s is not None else ('', '')
    if not rows and not cols:
      rows = next(iter(self.axes))
    items = [types.SimpleNamespace(member=m) for m in self.members]
    out = []
    for g in report.sheets(self.axes, items, rows, cols,
                           s.zip if s is not None else ()):
      if g['title']:
        out.append(f'<h3>{e(g["title"])}</h3>')
      out.append(f'<table class="grid"><tr><th>{e(report.corner(rows, cols))}'
                 '</th>' + ''.join(f'<th>{e(l)}</th>'
                                   for l in g['col_labels']) + '</tr>')
      for label, row in zip(g['row_labels'], g['cells']):
        out.append(f'<tr><th>{e(label).replace(chr(10), "<br>")}</th>')
        out += [f'<td>{self.cell(item.member) if item else ""}</td>'
                for item in row]
        out.append('</tr>')
      out.append('</table>')
    return '\n'.join(out)

  def cell(self, m) -> str:
    e = html.escape
    result = self.results.get(m.index)
    saved = self.saved.get(m.index, [])
    rows = self.rows.get(m.index, [])
    if result is not None:
      picture = result.image
      state = (f'{result.status} · chunk {result.chunk + 1}: '
               f'{result.wall_s:.1f} s')
    else:
      picture = saved[-1][1] if saved else ''
      state = f'running: step {rows[-1]["step"]}' if rows else 'waiting'
    losses = (f'<br>loss {rows[-1]["loss"]:.3e}<br>content '
              f'{rows[-1]["content"]:.3e}<br>style {rows[-1]["style"]:.3e}'
              if rows else '')
    img = (f'<a href="{e(picture)}"><img src="{e(picture)}"></a>'
           if picture else '')
    return f'{img}#{m.index} {e(state)}{losses}'


def _default_config():
  """configs/default.py's config, to name the fields a run changed; an
  empty one where it cannot be read (a package installed without the
  repository): then every field counts as changed."""
  try:
    return fields.load()
  except Exception:  # pylint: disable=broad-except
    return ml_collections.ConfigDict()


def thin(points: Sequence, most: int = POINTS) -> list:
  """At most ``most`` of ``points``, evenly spaced, the first and last
  kept (a chart of a long run needs no more)."""
  if len(points) <= most:
    return list(points)
  return [points[round(k * (len(points) - 1) / (most - 1))]
          for k in range(most)]


def read_rows(path: Path) -> Iterable[dict]:
  """The rows of a metrics.jsonl that parse (a resumed run's page starts
  with them)."""
  try:
    lines = path.read_text().splitlines()
  except OSError:
    return []
  out = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and 'step' in row:
      out.append(row)
  return out
