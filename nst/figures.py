"""Figures 1 and 2 of Gatys, Ecker & Bethge (2015), laid out like the paper.

Each figure is a sweep config (``configs/sweeps/fig1.py``, ``fig2.py``) whose
images live in one folder (``data/paper`` by default, filled by
``scripts/fetch_paper_images.py``). ``run`` points the config at the folder,
leaves out the panels whose image is missing (saying which), runs the sweep
as one batched computation (``nst.sweep``), and draws ``figure1.png`` or
``figure2.png`` into the workdir next to the sweep's own outputs.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from nst import backend, images, report
from nst import runner
from nst.errors import UserError

IMAGES_DIR = 'data/paper'
CONTENT = 'tubingen.jpg'     # the Neckarfront in Tübingen, both figures


@dataclasses.dataclass(frozen=True)
class Painting:
  file: str
  panel: str
  ratio: float               # alpha/beta of the paper's panel
  title: str


# Figure 2, panels B-F, with the paper's alpha/beta.
FIG2_PAINTINGS = (
    Painting('shipwreck.jpg', 'B', 1e-3,
             'The Shipwreck of the Minotaur\nJ. M. W. Turner'),
    Painting('starry_night.jpg', 'C', 1e-3,
             'The Starry Night\nVincent van Gogh'),
    Painting('the_scream.jpg', 'D', 1e-3, 'The Scream\nEdvard Munch'),
    Painting('seated-nude.jpg', 'E', 1e-4, 'Femme nue assise\nPablo Picasso'),
    Painting('composition_vii.jpg', 'F', 1e-4,
             'Composition VII\nWassily Kandinsky'),
)
FIG1_STYLE = 'starry_night.jpg'


def rebase(config, images_dir: str | Path) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose image files are taken from ``images_dir``.

  The content and style images (fields and sweep axes) keep their file names
  and get the folder; builtin images (``skimage:...``) stay.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  folder = Path(images_dir)

  def move(value):
    if isinstance(value, str) and not images.is_builtin(value):
      return str(folder / Path(value).name)
    return value

  for field in ('content_image', 'style_image'):
    c[field] = move(c[field])
    if field in c.sweep.axes:
      c.sweep.axes[field] = tuple(move(v) for v in c.sweep.axes[field])
  return c


def _exists(value) -> bool:
  return images.is_builtin(value) or Path(value).is_file()


def drop_missing(config) -> tuple[ml_collections.ConfigDict, list[str]]:
  """Removes sweep members whose style image file is missing.

  Zipped axes lose the same positions. Returns the config and the missing
  files. A missing content image, or no member left, is a UserError.
  """
  if not _exists(config.content_image):
    raise UserError(f'content image {config.content_image!r} does not exist; '
                    'fetch the paper images with '
                    'scripts/fetch_paper_images.py or pass --images')
  c = ml_collections.ConfigDict(config.to_dict())
  axes = c.sweep.axes
  if 'style_image' not in axes:
    if not _exists(c.style_image):
      raise UserError(f'style image {c.style_image!r} does not exist')
    return c, []
  values = tuple(axes.style_image)
  keep = [i for i, v in enumerate(values) if _exists(v)]
  missing = [v for v in values if not _exists(v)]
  if not keep:
    raise UserError(f'none of the style images exist: {", ".join(missing)}')
  zipped = next((g for g in c.sweep.get('zip', ()) if 'style_image' in g),
                ('style_image',))
  for name in zipped:
    axes[name] = tuple(axes[name][i] for i in keep)
  return c, missing


def _picture(workdir: Path, result) -> np.ndarray | None:
  if result is None or not result.image:
    return None
  with Image.open(workdir / result.image) as im:
    return np.asarray(im.convert('RGB'))


def figure1(workdir: Path, results, layers) -> tuple[Image.Image, dict]:
  """Two labelled rows: content and style reconstructions per layer."""
  by_index = {r.member.index: r for r in results}
  n = len(layers)
  grid = [[_picture(workdir, by_index.get(i)) for i in range(n)],
          [_picture(workdir, by_index.get(n + i)) for i in range(n)]]
  # The paper's names are Caffe blobs with the ReLU in place (relu1_1 here).
  names = [l.replace('relu', 'conv') for l in layers]
  cols = [f'{chr(ord("a") + i)}  {name}' for i, name in enumerate(names)]
  rows = ['Content\nreconstruction\n(that layer)',
          'Style\nreconstruction\n(conv1_1 up to\nthat layer)']
  return report.contact_sheet(
      grid, rows, cols, title='Gatys, Ecker & Bethge (2015), Figure 1')


def _inset(result: np.ndarray, painting: np.ndarray,
           frac: float = 0.33) -> np.ndarray:
  """The painting in the result's lower-left corner, framed in white."""
  out = result.copy()
  h, w = out.shape[:2]
  ph, pw = painting.shape[:2]
  scale = frac * w / pw
  th, tw = max(1, round(ph * scale)), max(1, round(pw * scale))
  th = min(th, h - 2)
  small = images.resize_to(painting, th, tw)
  border = max(1, w // 150)
  y0 = h - th - border
  out[max(0, y0 - border):h, 0:min(w, tw + 2 * border)] = 255
  out[y0:y0 + th, border:border + tw] = small[:, :min(tw, w - border)]
  return out


def panel_grid(panels, cols: int, *, title: str = '', pad: int = 8):
  """``panels`` = [(image or None, caption)], drawn ``cols`` per row with the
  caption above each; returns ``(PIL image, layout)`` with each panel's box."""
  font = report.label_font()
  probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))

  def text_size(s):
    x0, y0, x1, y1 = probe.multiline_textbbox((0, 0), s, font=font)
    return x1, y1

  shown = [im for im, _ in panels if im is not None] or [np.zeros((64, 64, 3))]
  cell_w = max(max(im.shape[1] for im in shown),
               max(text_size(c)[0] for _, c in panels))
  img_h = max(im.shape[0] for im in shown)
  cap_h = max(text_size(c)[1] for _, c in panels) + pad
  rows = -(-len(panels) // cols)
  title_h = text_size(title)[1] + 2 * pad if title else 0
  width = pad + cols * (cell_w + pad)
  height = title_h + rows * (cap_h + img_h + pad) + pad
  sheet = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(sheet)
  if title:
    draw.multiline_text((pad, pad), title, fill='black', font=font)
  layout = {'panels': [], 'captions': [c for _, c in panels]}
  for k, (im, caption) in enumerate(panels):
    r, c = divmod(k, cols)
    x0 = pad + c * (cell_w + pad)
    y0 = title_h + pad + r * (cap_h + img_h + pad)
    draw.multiline_text((x0, y0), caption, fill='black', font=font)
    box = (x0, y0 + cap_h, x0 + cell_w, y0 + cap_h + img_h)
    layout['panels'].append(box)
    if im is None:
      draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1),
                     outline='lightgray')
      continue
    sheet.paste(Image.fromarray(np.asarray(im, np.uint8)), box[:2])
  return sheet, layout


def planned_ratios(config) -> dict[str, float]:
  """{style image file name: alpha/beta} of a sweep whose ``ratio`` axis is
  zipped with its ``style_image`` axis (configs/sweeps/fig2.py), read before
  missing images are dropped; {} for any other sweep."""
  axes = config.sweep.axes
  if 'style_image' not in axes or 'ratio' not in axes or len(
      axes.style_image) != len(axes.ratio):
    return {}
  return {Path(s).name: r for s, r in zip(axes.style_image, axes.ratio)}


def figure2(workdir: Path, results, images_dir: Path, size: int,
            ratios: dict[str, float] | None = None):
  """Panel A (the photo) and B-F (the results, paintings as insets). A panel
  without a result is captioned with its ratio in ``ratios`` (what the run
  was asked for; ``planned_ratios``), else the paper's."""
  content = images.resize(images.read_rgb(str(images_dir / CONTENT)), size)
  by_file = {Path(r.member.config.style_image).name: r for r in results}
  panels = [(content, 'A  Photograph: Neckarfront, Tuebingen')]
  for p in FIG2_PAINTINGS:
    result = by_file.get(p.file)
    title = p.title.replace('\n', ', ')
    ratio = (result.member.config.content_weight /
             result.member.config.style_weight) if result else (
                 ratios or {}).get(p.file, p.ratio)
    caption = f'{p.panel}  {title}\nalpha/beta = {ratio:.3g}'
    picture = _picture(workdir, result)
    if picture is None:
      panels.append((None, caption + ('\n(missing image)' if result is None
                                      else '\n(diverged)')))
      continue
    painting = images.read_rgb(str(images_dir / p.file))
    panels.append((_inset(picture, painting), caption))
  return panel_grid(panels, 2,
                    title='Gatys, Ecker & Bethge (2015), Figure 2')


def run(figure: int, config, images_dir: str | Path, workdir: Path,
        overwrite: bool = False):
  """Runs figure ``figure`` (1 or 2) into ``workdir`` (``nst.runner.run``,
  which refuses a folder holding files unless ``overwrite``); returns the
  PNG path."""
  if figure not in (1, 2):
    raise UserError(f'figure {figure!r}: accepted are 1 and 2 (Figure 3 is '
                    'configs/sweeps/fig3.py)')
  images_dir = Path(images_dir)
  config = rebase(config, images_dir)
  ratios = planned_ratios(config)
  config, missing = drop_missing(config)
  for path in missing:
    print(f'missing {path}: its panel is left empty (fetch it with '
          'scripts/fetch_paper_images.py)', file=sys.stderr)
  results = runner.run(config, workdir, overwrite=overwrite)
  if figure == 1:
    layers = config.sweep.axes.content_layers[:len(results) // 2]
    picture, _ = figure1(workdir, results, [l[0] for l in layers])
  else:
    picture, _ = figure2(workdir, results, images_dir, config.image_size,
                         ratios)
  out = workdir / f'figure{figure}.png'
  report.save_png(out, picture)
  print(f'wrote {out}', flush=True)
  return out


def main(figure: int, config_path: str | Path) -> None:
  """Command line of ``scripts/figure{1,2}.py``: nst.run's flags (--config,
  defaulting to ``config_path``, with its overrides; --workdir; --overwrite)
  and --images."""
  # ml_collections reads the config's path from sys.argv when the flag is
  # defined (on importing nst.run), so the default goes there first.
  if not any(a == '--config' or a.startswith('--config=') for a in sys.argv):
    sys.argv.insert(1, f'--config={config_path}')
  backend.setup()  # before JAX starts
  from absl import app, flags, logging
  from nst import run as cli

  images_flag = flags.DEFINE_string(
      'images', IMAGES_DIR, 'Folder with the paper images '
      '(scripts/fetch_paper_images.py).')

  def _main(args):
    logging.set_verbosity(logging.WARNING)  # as nst.run does
    if len(args) > 1:
      raise app.UsageError(f'unexpected arguments: {args[1:]}')
    config = cli.CONFIG.value
    workdir = (Path(cli.WORKDIR.value) if cli.WORKDIR.value
               else Path('runs') / f'fig{figure}')
    try:
      backend.compile_cache(cli.check_backend())  # as nst.run does
      run(figure, config, images_flag.value, workdir,
          overwrite=cli.OVERWRITE.value)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(_main, flags_parser=cli.parse_flags)
