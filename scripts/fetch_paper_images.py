"""Downloads the images of the paper's figures from their public sources.

  python scripts/fetch_paper_images.py [--dest data/paper] [--only FILE ...]

Each file is streamed to a temporary file beside its destination, checked,
and only then renamed into place; nothing is resized. The checks:
  * a pinned hash: sha256, or where only an md5 is on record (taken from
    pystiche's list of the same URLs, not re-measured here), the md5;
  * without a pin, the sha256 recorded in DEST/SHA256SUMS by the first
    download (trust on first use): a later download that differs is refused;
  * the file must open as an image (an HTML error page is refused).
A file that fails a check is deleted and named, with what was expected. Files
already present and matching are skipped. Exit status 1 if any file failed.

The figures (scripts/figure1.py, figure2.py) read these files from DEST.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, UnidentifiedImageError

USER_AGENT = 'nst-fetch-paper-images/0.1 (research code; python urllib)'
COMMONS = 'https://upload.wikimedia.org/wikipedia/commons'
MAX_BYTES = 512 << 20
SUMS = 'SHA256SUMS'


@dataclasses.dataclass(frozen=True)
class Source:
  file: str            # name under --dest (what the figure scripts read)
  url: str
  credit: str
  sha256: str = ''     # pinned hashes of the file at ``url`` ('' = none)
  md5: str = ''


SOURCES = (
    Source('tubingen.jpg', f'{COMMONS}/0/00/Tuebingen_Neckarfront.jpg',
           'Neckarfront, Tuebingen; photo by Andreas Praefcke, Wikimedia '
           'Commons, CC BY 3.0'),
    Source('shipwreck.jpg', f'{COMMONS}/2/2e/Shipwreck_turner.jpg',
           'J. M. W. Turner, The Shipwreck of the Minotaur (c. 1810); public '
           'domain'),
    # Wikimedia's 1280 px rendition: the original Google Art Project scan is
    # hundreds of megapixels, beyond Pillow's decompression-bomb limit.
    Source('starry_night.jpg',
           f'{COMMONS}/thumb/e/ea/Van_Gogh_-_Starry_Night_-_Google_Art_Project'
           '.jpg/1280px-Van_Gogh_-_Starry_Night_-_Google_Art_Project.jpg',
           'Vincent van Gogh, The Starry Night (1889); public domain',
           md5='372e5bc438e3e8d0eb52cc6f7ef44760'),
    Source('the_scream.jpg', f'{COMMONS}/f/f4/The_Scream.jpg',
           'Edvard Munch, The Scream (1893); public domain',
           md5='46ef64eea5a7b2d13dbadd420b531249'),
    Source('seated-nude.jpg',
           'https://upload.wikimedia.org/wikipedia/en/8/8f/Pablo_Picasso%2C_'
           '1909-10%2C_Figure_dans_un_Fauteuil_%28Seated_Nude%2C_Femme_nue_'
           'assise%29%2C_oil_on_canvas%2C_92.1_x_73_cm%2C_Tate_Modern%2C_'
           'London.jpg',
           'Pablo Picasso, Femme nue assise (1909-10); English Wikipedia, '
           'non-free: research use only, not public domain everywhere',
           md5='ba14b947b225d9e5c59520a814376944'),
    Source('composition_vii.jpg',
           f'{COMMONS}/b/b4/Vassily_Kandinsky%2C_1913_-_Composition_7.jpg',
           'Wassily Kandinsky, Composition VII (1913); public domain',
           md5='bfcbc420684bf27d2d8581fa8cc9522f'),
)


class FetchError(Exception):
  """A download that failed or was refused; the message says why."""


def _hashes(path: Path) -> dict[str, str]:
  h = {'sha256': hashlib.sha256(), 'md5': hashlib.md5()}
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      for v in h.values():
        v.update(chunk)
  return {k: v.hexdigest() for k, v in h.items()}


def read_sums(dest: Path) -> dict[str, str]:
  sums = {}
  path = dest / SUMS
  if path.is_file():
    for line in path.read_text().splitlines():
      digest, _, name = line.strip().partition('  ')
      if digest and name:
        sums[name] = digest
  return sums


def write_sums(dest: Path, sums: dict[str, str]) -> None:
  text = ''.join(f'{d}  {n}\n' for n, d in sorted(sums.items()))
  fd, tmp = tempfile.mkstemp(dir=dest, prefix='.' + SUMS)
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, dest / SUMS)


def check(path: Path, source: Source, recorded: str = '') -> str:
  """Raises FetchError unless ``path`` matches the pins; returns its sha256."""
  got = _hashes(path)
  for kind in ('sha256', 'md5'):
    want = getattr(source, kind)
    if want and got[kind] != want:
      raise FetchError(f'{source.file}: {kind} {got[kind]} does not match '
                       f'the pinned {want}')
  if not (source.sha256 or source.md5) and recorded and (
      got['sha256'] != recorded):
    raise FetchError(f'{source.file}: sha256 {got["sha256"]} differs from '
                     f'{recorded} recorded in {SUMS} by an earlier download')
  try:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read here
    with Image.open(path) as im:
      im.verify()
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise FetchError(f'{source.file}: the download is not an image ({e})')
  finally:
    Image.MAX_IMAGE_PIXELS = previous
  return got['sha256']


def download(url: str, out: Path, timeout: float) -> None:
  request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response, \
        open(out, 'wb') as f:
      size = 0
      while chunk := response.read(1 << 20):
        size += len(chunk)
        if size > MAX_BYTES:
          raise FetchError(f'{url} is larger than {MAX_BYTES >> 20} MiB')
        f.write(chunk)
  except urllib.error.HTTPError as e:
    raise FetchError(f'cannot download {url}: HTTP {e.code} {e.reason}')
  except (urllib.error.URLError, TimeoutError, OSError) as e:
    reason = getattr(e, 'reason', e)
    raise FetchError(f'cannot download {url}: {reason}')


def fetch(source: Source, dest: Path, timeout: float = 60.0) -> str:
  """Downloads ``source`` into ``dest`` unless a good copy is there.

  Returns 'present' or 'downloaded'; raises FetchError (and leaves no file
  behind) if the download fails or is refused.
  """
  dest.mkdir(parents=True, exist_ok=True)
  sums = read_sums(dest)
  target = dest / source.file
  if target.is_file():
    try:
      check(target, source, sums.get(source.file, ''))
      return 'present'
    except FetchError as e:
      print(f'{e}; downloading again', file=sys.stderr)
  fd, name = tempfile.mkstemp(dir=dest, prefix=f'.{source.file}.')
  os.close(fd)
  tmp = Path(name)
  try:
    download(source.url, tmp, timeout)
    sha = check(tmp, source, sums.get(source.file, ''))
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)
  if not (source.sha256 or source.md5):
    sums[source.file] = sha
    write_sums(dest, sums)
  return 'downloaded'


def main(argv=None, sources=SOURCES) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dest', type=Path, default=Path('data/paper'))
  parser.add_argument('--only', nargs='+', metavar='FILE',
                      help='fetch only these files')
  parser.add_argument('--timeout', type=float, default=60.0,
                      help='seconds without data before a download fails')
  args = parser.parse_args(argv)
  chosen = list(sources)
  if args.only:
    known = {s.file for s in sources}
    unknown = [f for f in args.only if f not in known]
    if unknown:
      print(f'error: unknown file(s) {unknown}; accepted: '
            f'{", ".join(sorted(known))}', file=sys.stderr)
      return 2
    chosen = [s for s in sources if s.file in args.only]
  try:
    args.dest.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    print(f'error: cannot make --dest {str(args.dest)!r} a folder: '
          f'{e.strerror or e}', file=sys.stderr)
    return 2
  failed = []
  for source in chosen:
    try:
      status = fetch(source, args.dest, args.timeout)
      pin = ('sha256' if source.sha256 else 'md5' if source.md5
             else f'no pin: sha256 recorded in {SUMS}')
      print(f'{status:10} {args.dest / source.file}  ({pin})')
    except FetchError as e:
      print(f'error: {e}', file=sys.stderr)
      failed.append(source.file)
    except OSError as e:  # a read-only or full --dest
      print(f'error: cannot write {e.filename or args.dest}: '
            f'{e.strerror or e}', file=sys.stderr)
      failed.append(source.file)
  if failed:
    print(f'{len(failed)} of {len(chosen)} failed: {", ".join(failed)}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
