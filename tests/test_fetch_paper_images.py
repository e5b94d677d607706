"""scripts/fetch_paper_images.py against a local HTTP server."""
import functools
import hashlib
import http.server
import importlib.util
import io
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope='module')
def fetcher():
  path = ROOT / 'scripts' / 'fetch_paper_images.py'
  spec = importlib.util.spec_from_file_location('fetch_paper_images', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def server(tmp_path):
  """Serves tmp_path/www on localhost; yields (base url, folder, request log)."""
  www = tmp_path / 'www'
  www.mkdir()
  log = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
      log.append(self.path)
      super().do_GET()

    def log_message(self, *args):
      pass

  httpd = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(Handler, directory=str(www)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_port}', www, log
  httpd.shutdown()
  httpd.server_close()


def _jpeg(seed):
  rgb = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format='JPEG')
  return buf.getvalue()


def _listing(folder):
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_then_present(fetcher, server, tmp_path):
  base, www, log = server
  data = _jpeg(0)
  (www / 'a.jpg').write_bytes(data)
  source = fetcher.Source('tubingen.jpg', f'{base}/a.jpg', 'test',
                          sha256=hashlib.sha256(data).hexdigest())
  dest = tmp_path / 'data'
  assert fetcher.fetch(source, dest) == 'downloaded'
  assert (dest / 'tubingen.jpg').read_bytes() == data
  assert _listing(dest) == ['tubingen.jpg']  # no temporary file left
  assert fetcher.fetch(source, dest) == 'present'
  assert log == ['/a.jpg']  # the second call did not download


def test_wrong_hash_is_refused_and_removed(fetcher, server, tmp_path):
  base, www, _ = server
  (www / 'a.jpg').write_bytes(_jpeg(1))
  pin = hashlib.sha256(b'something else').hexdigest()
  source = fetcher.Source('x.jpg', f'{base}/a.jpg', 'test', sha256=pin)
  dest = tmp_path / 'data'
  with pytest.raises(fetcher.FetchError,
                     match=f'does not match the pinned {pin}'):
    fetcher.fetch(source, dest)
  assert _listing(dest) == []
  # An md5 pin is checked the same way.
  source = fetcher.Source('x.jpg', f'{base}/a.jpg', 'test', md5='0' * 32)
  with pytest.raises(fetcher.FetchError, match='md5 .* does not match'):
    fetcher.fetch(source, dest)
  assert _listing(dest) == []


def test_unpinned_file_is_recorded_and_a_change_refused(fetcher, server,
                                                        tmp_path):
  base, www, _ = server
  first = _jpeg(2)
  (www / 'a.jpg').write_bytes(first)
  source = fetcher.Source('s.jpg', f'{base}/a.jpg', 'test')
  dest = tmp_path / 'data'
  assert fetcher.fetch(source, dest) == 'downloaded'
  assert fetcher.read_sums(dest) == {
      's.jpg': hashlib.sha256(first).hexdigest()}
  # The local copy is damaged and the server now serves other bytes: the
  # download is refused and the damaged copy is kept, not replaced.
  (dest / 's.jpg').write_bytes(b'damaged')
  (www / 'a.jpg').write_bytes(_jpeg(3))
  with pytest.raises(fetcher.FetchError, match='differs from .* recorded'):
    fetcher.fetch(source, dest)
  assert (dest / 's.jpg').read_bytes() == b'damaged'
  assert _listing(dest) == ['SHA256SUMS', 's.jpg']


def test_not_an_image_and_http_errors(fetcher, server, tmp_path):
  base, www, _ = server
  (www / 'page.jpg').write_text('<html>rate limited</html>')
  dest = tmp_path / 'data'
  with pytest.raises(fetcher.FetchError, match='not an image'):
    fetcher.fetch(fetcher.Source('p.jpg', f'{base}/page.jpg', 't'), dest)
  with pytest.raises(fetcher.FetchError, match='HTTP 404'):
    fetcher.fetch(fetcher.Source('m.jpg', f'{base}/missing.jpg', 't'), dest)
  assert _listing(dest) == []


def test_unreachable_host_is_a_clear_error(fetcher, tmp_path, capsys):
  with socket.socket() as s:  # a port that nothing listens on
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  sources = (fetcher.Source('u.jpg', f'http://127.0.0.1:{port}/u.jpg', 't'),)
  dest = tmp_path / 'data'
  assert fetcher.main(['--dest', str(dest), '--timeout', '5'],
                      sources=sources) == 1
  err = capsys.readouterr().err
  assert f'error: cannot download http://127.0.0.1:{port}/u.jpg' in err
  assert 'refused' in err.lower()
  assert 'Traceback' not in err
  assert _listing(dest) == []


def test_main_fetches_the_list_and_reports(fetcher, server, tmp_path, capsys):
  base, www, _ = server
  good, bad = _jpeg(4), _jpeg(5)
  (www / 'g.jpg').write_bytes(good)
  (www / 'b.jpg').write_bytes(bad)
  sources = (
      fetcher.Source('good.jpg', f'{base}/g.jpg', 't',
                     sha256=hashlib.sha256(good).hexdigest()),
      fetcher.Source('bad.jpg', f'{base}/b.jpg', 't', sha256='1' * 64))
  dest = tmp_path / 'data'
  assert fetcher.main(['--dest', str(dest)], sources=sources) == 1
  out, err = capsys.readouterr()
  assert 'downloaded' in out and 'good.jpg' in out
  assert 'bad.jpg' in err and '1 of 2 failed' in err
  assert _listing(dest) == ['good.jpg']
  assert fetcher.main(['--dest', str(dest), '--only', 'nope.jpg'],
                      sources=sources) == 2
  assert "unknown file(s) ['nope.jpg']" in capsys.readouterr().err


def test_the_real_list_names_what_the_figures_read(fetcher):
  from nst import figures
  files = {s.file for s in fetcher.SOURCES}
  assert figures.CONTENT in files and figures.FIG1_STYLE in files
  assert {p.file for p in figures.FIG2_PAINTINGS} <= files
  for s in fetcher.SOURCES:
    assert s.url.startswith('https://upload.wikimedia.org/')
    assert len(s.sha256) in (0, 64) and len(s.md5) in (0, 32)


def test_a_dest_that_cannot_be_a_folder_is_one_line(fetcher, tmp_path,
                                                    capsys):
  a_file = tmp_path / 'data'
  a_file.write_text('not a folder')
  sources = (fetcher.Source('u.jpg', 'http://127.0.0.1:9/u.jpg', 't'),)
  assert fetcher.main(['--dest', str(a_file)], sources=sources) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: cannot make --dest '{a_file}' a folder: ")
  assert err.count('\n') == 1 and a_file.read_text() == 'not a folder'
