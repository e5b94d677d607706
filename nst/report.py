"""What a sweep leaves to look at: results.csv, contact sheets, index.html.

  results.csv          one row per member: its axis values, status, steps,
                       final losses, its chunk's wall time (compilation
                       included) and steps/s (after the first step), image
  contact_sheet.png    the members' images on a grid whose rows and columns
                       are two sweep axes, labelled (one sheet per value of
                       the remaining axes: contact_sheet_01.png, ...)
  index.html           the sheets, then each grid as a table of linked images

Nothing here runs JAX; it reads the PNGs the sweep wrote.
"""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nst import images, losses



def loss_columns() -> tuple[str, ...]:
  """The total and each term of the objective (``losses.TERMS``)."""
  return ('loss', *losses.TERMS)


def text(value: Any, sep: str = ' ') -> str:
  """A short human form of an axis value: 1e-05, conv1_1 conv2_1, name.jpg."""
  if isinstance(value, (tuple, list)):
    return sep.join(text(v) for v in value) or '()'
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, str) and ('/' in value or '\\' in value):
    return Path(value).name
  return str(value)


def corner(rows: str, cols: str) -> str:
  """A grid's top-left label: ``rows \\ cols``, or the one axis it has."""
  if rows and cols:
    return f'{rows} \\ {cols}'
  return rows or cols


def csv_value(value: Any) -> str:
  """An axis value for results.csv, exact: repr of floats, paths whole."""
  if isinstance(value, (tuple, list)):
    return ' '.join(csv_value(v) for v in value)
  return repr(value) if isinstance(value, float) else str(value)


def label_font():
  try:
    return ImageFont.load_default(size=13)
  except TypeError:  # Pillow without FreeType support for the default font
    return ImageFont.load_default()


def contact_sheet(grid: Sequence[Sequence[np.ndarray | None]],
                  row_labels: Sequence[str], col_labels: Sequence[str], *,
                  corner: str = '', title: str = '', pad: int = 6):
  """Images on a labelled grid; returns ``(PIL image, layout)``.

  ``grid[r][c]`` is an (H, W, 3) uint8 image or None (an empty cell). Each
  cell is as large as the largest image (and its labels); images are centred
  in it. ``layout``
  holds the pixel boxes (x0, y0, x1, y1) of every cell, row label and column
  label.
  """
  font = label_font()
  probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))

  def size(s):
    if not s:
      return 0, 0
    x0, y0, x1, y1 = probe.multiline_textbbox((0, 0), s, font=font)
    return x1, y1

  shown = [im for row in grid for im in row if im is not None]
  # A cell fits the largest image, its row label and its column label.
  cell_h = max([im.shape[0] for im in shown] + [size(s)[1] for s in row_labels]
               + [32])
  cell_w = max([im.shape[1] for im in shown] + [size(s)[0] for s in col_labels]
               + [32])
  label_w = max(size(s)[0] for s in list(row_labels) + [corner]) + 2 * pad
  header_h = max(size(s)[1] for s in list(col_labels) + [corner]) + 2 * pad
  title_h = size(title)[1] + 2 * pad if title else 0
  width = label_w + len(col_labels) * (cell_w + pad)
  height = title_h + header_h + len(row_labels) * (cell_h + pad)
  sheet = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(sheet)
  layout = {'cells': {}, 'rows': [], 'cols': []}
  if title:
    draw.multiline_text((pad, pad), title, fill='black', font=font)
  if corner:
    draw.multiline_text((pad, title_h + pad), corner, fill='gray', font=font)
  for c, label in enumerate(col_labels):
    x0 = label_w + c * (cell_w + pad)
    draw.multiline_text((x0, title_h + pad), label, fill='black', font=font)
    layout['cols'].append((x0, title_h, x0 + cell_w, title_h + header_h))
  for r, label in enumerate(row_labels):
    y0 = title_h + header_h + r * (cell_h + pad)
    draw.multiline_text((pad, y0 + (cell_h - size(label)[1]) // 2), label,
                        fill='black', font=font)
    layout['rows'].append((0, y0, label_w, y0 + cell_h))
    for c in range(len(col_labels)):
      x0 = label_w + c * (cell_w + pad)
      layout['cells'][r, c] = (x0, y0, x0 + cell_w, y0 + cell_h)
      im = grid[r][c]
      if im is None:
        draw.rectangle((x0, y0, x0 + cell_w - 1, y0 + cell_h - 1),
                       outline='lightgray')
        continue
      h, w = im.shape[:2]
      sheet.paste(Image.fromarray(im), (x0 + (cell_w - w) // 2,
                                        y0 + (cell_h - h) // 2))
  return sheet, layout


def write_csv(path: Path, axes: dict[str, tuple], results) -> None:
  columns = ['member', *axes, 'status', 'steps', *loss_columns(), 'wall_s',
             'steps_per_s', 'group', 'chunk', 'image']
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns)
  for r in results:
    m = r.metrics
    writer.writerow([r.member.index,
                     *(csv_value(r.member.values[a]) for a in axes),
                     r.status, m['step'],
                     *(f'{m[k]:.6e}' for k in loss_columns()),
                     f'{r.wall_s:.2f}', f'{r.steps_per_s:.3f}', r.group,
                     r.chunk, r.image])
  images.write_atomic(path, out.getvalue().encode())


def _read(path: Path) -> np.ndarray | None:
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert('RGB'))
  except OSError:  # not written (or not visible from this host)
    return None


def sheets(axes: dict[str, tuple], results, rows: str = '', cols: str = '',
           zipped=()):
  """The grids to draw: one per combination of the axes not on the grid.

  Axes in a ``zipped`` group with ``rows`` or ``cols`` move with it and get
  no sheets of their own. Returns dicts with ``title``, ``row_labels``,
  ``col_labels`` and ``cells`` (``cells[r][c]`` a result or None).
  """
  tied = {rows, cols} | {a for group in zipped if {rows, cols} & set(group)
                         for a in group}
  others = [a for a in axes if a not in tied]
  n_rows = len(axes[rows]) if rows else 1
  n_cols = len(axes[cols]) if cols else 1
  out = {}
  for r in results:
    coords = r.member.coords
    key = tuple(coords[a] for a in others)
    if key not in out:
      out[key] = {
          'title': ', '.join(f'{a}={text(axes[a][i])}'
                             for a, i in zip(others, key)),
          'row_labels': [text(v, '\n') for v in axes[rows]] if rows else [''],
          'col_labels': [text(v, '\n') for v in axes[cols]] if cols else [''],
          'cells': [[None] * n_cols for _ in range(n_rows)],
      }
    out[key]['cells'][coords[rows] if rows else 0][
        coords[cols] if cols else 0] = r
  return list(out.values())


def save_png(path: Path, picture: Image.Image) -> None:
  """Writes a PIL image as PNG, atomically."""
  buffer = io.BytesIO()
  picture.save(buffer, format='PNG')
  images.write_atomic(path, buffer.getvalue())


def write_all(workdir: Path, axes: dict[str, tuple], results, *,
              rows: str = '', cols: str = '', zipped=()) -> None:
  """results.csv, the contact sheets and index.html into ``workdir``."""
  if not rows and not cols:
    rows = next(iter(axes))
  write_csv(workdir / 'results.csv', axes, results)
  grids = sheets(axes, results, rows, cols, zipped)
  label = corner(rows, cols)
  for k, g in enumerate(grids):
    g['file'] = ('contact_sheet.png' if len(grids) == 1 else
                 f'contact_sheet_{k + 1:02d}.png')
    pictures = [[_read(workdir / r.image) if r and r.image else None
                 for r in row]
                for row in g['cells']]
    sheet, _ = contact_sheet(pictures, g['row_labels'], g['col_labels'],
                             corner=label, title=g['title'])
    save_png(workdir / g['file'], sheet)
  images.write_atomic(workdir / 'index.html',
                      index_html(grids, rows, cols).encode())


def index_html(grids, rows: str, cols: str) -> str:
  e = html.escape
  parts = ['<!doctype html><meta charset="utf-8"><title>nst sweep</title>',
           '<style>body{font-family:sans-serif} td,th{vertical-align:top;'
           'padding:4px;font-size:12px} img{max-width:256px}</style>',
           '<h1>Sweep</h1><p><a href="results.csv">results.csv</a> &middot; '
           '<a href="metrics.jsonl">metrics.jsonl</a> &middot; '
           '<a href="config.json">config.json</a></p>']
  for g in grids:
    if g['title']:
      parts.append(f'<h2>{e(g["title"])}</h2>')
    parts.append(f'<p><a href="{e(g["file"])}"><img src="{e(g["file"])}" '
                 'style="max-width:100%"></a></p>')
    parts.append(f'<table><tr><th>{e(corner(rows, cols))}</th>')
    parts += [f'<th>{e(l)}</th>' for l in g['col_labels']]
    parts.append('</tr>')
    for label, row in zip(g['row_labels'], g['cells']):
      parts.append(f'<tr><th>{e(label).replace(chr(10), "<br>")}</th>')
      for r in row:
        if r is None:
          parts.append('<td></td>')
          continue
        m = r.metrics
        caption = (f'#{r.member.index} {r.status}<br>loss {m["loss"]:.3e}'
                   f'<br>content {m["content"]:.3e}<br>style '
                   f'{m["style"]:.3e}')
        picture = (f'<a href="{e(r.image)}"><img src="{e(r.image)}" '
                   f'title="{e(r.image)}"></a><br>' if r.image else '')
        parts.append(f'<td>{picture}{caption}</td>')
      parts.append('</tr>')
    parts.append('</table>')
  return '\n'.join(parts) + '\n'
