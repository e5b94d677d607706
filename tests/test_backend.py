"""nst.backend: the persistent compilation cache (where, when, pruning)."""
import os
import subprocess
import sys
import warnings

import jax
import pytest

from conftest import ROOT
from helpers import TINY
from nst import backend

OPTIONS = ('jax_compilation_cache_dir',
           'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')


@pytest.fixture
def jax_options():
  """JAX's cache options as they were, put back after the test (nothing is
  compiled in between, so the cache itself never starts)."""
  before = {k: getattr(jax.config, k) for k in OPTIONS}
  yield
  for k, v in before.items():
    jax.config.update(k, v)


def test_a_gpu_caches_under_nst_cache_and_a_cpu_only_when_asked(
    tmp_path, monkeypatch, jax_options):
  monkeypatch.setenv('NST_CACHE', str(tmp_path / 'c'))
  monkeypatch.delenv(backend.CACHE_ENV, raising=False)
  assert backend.compile_cache('cpu') is None
  assert jax.config.jax_compilation_cache_dir is None
  assert backend.compile_cache('gpu') == tmp_path / 'c' / 'xla'
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'c' / 'xla')
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / 'mine'))
  assert backend.compile_cache('cpu') == tmp_path / 'mine'
  assert (tmp_path / 'mine').is_dir()
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'mine')
  jax.config.update('jax_compilation_cache_dir', None)
  for off in ('off', 'OFF', ' Off ', '0', 'false', 'None'):
    monkeypatch.setenv(backend.CACHE_ENV, off)
    assert backend.compile_cache('gpu') is None
    assert backend.compile_cache('tpu') is None
  assert jax.config.jax_compilation_cache_dir is None
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(backend.CACHE_ENV, 'here')  # relative: made absolute
  assert backend.compile_cache('cpu') == tmp_path / 'here'
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'here')


def test_a_folder_that_cannot_be_written_leaves_the_cache_off(
    tmp_path, monkeypatch, capsys, jax_options):
  (tmp_path / 'file').write_text('not a folder')
  for value, line in (
      ('file', f'{tmp_path / "file"} is not a folder'),
      ('file/xla', f"cannot write '{tmp_path / 'file' / 'xla'}': ")):
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / value))
    assert backend.compile_cache('gpu') is None
    assert jax.config.jax_compilation_cache_dir is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'compilation cache off: {line}'), err
    assert err[0].endswith(f'; set {backend.CACHE_ENV} to another folder, '
                           'or to off')
  assert (tmp_path / 'file').read_text() == 'not a folder'


def test_an_entry_that_cannot_be_read_or_written_is_one_line(
    tmp_path, monkeypatch, capsys, jax_options):
  """JAX warns for each entry it cannot read or write (a full disk, an
  entry cut short): one line for each of the two, other warnings shown as
  before."""
  others = []
  monkeypatch.setattr(warnings, 'showwarning',
                      lambda message, *args, **kwargs: others.append(message))
  monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path))
  assert backend.compile_cache('gpu') == tmp_path
  with warnings.catch_warnings():
    warnings.simplefilter('always')
    for name in ('jit_a', 'jit_b'):
      warnings.warn(f"Error writing persistent compilation cache entry for "
                    f"'{name}': OSError: [Errno 28] No space left on device")
      warnings.warn(f"Error reading persistent compilation cache entry for "
                    f"'{name}': RuntimeError: truncated\nmore detail")
    warnings.warn('something else')
  err = capsys.readouterr().err.splitlines()
  assert err[:2] == [
      f'compilation cache: cannot write an entry in {tmp_path} (OSError: '
      '[Errno 28] No space left on device); the run goes on without it',
      f'compilation cache: cannot read an entry in {tmp_path} (RuntimeError: '
      'truncated); compiled instead (deleting the folder clears the cache)']
  assert len(err) == 2, err
  assert [str(m) for m in others] == ['something else']


def test_pruning_removes_the_oldest_entries_until_the_rest_fit(tmp_path):
  for i, size in enumerate((300, 200, 100, 400)):  # oldest first
    path = tmp_path / f'entry{i}-cache'
    path.write_bytes(b'x' * size)
    os.utime(path, (1000 + i, 1000 + i))
  (tmp_path / 'cut-cache').touch()  # empty: an entry whose write stopped
  (tmp_path / 'autotune').mkdir()  # a subfolder: left alone
  (tmp_path / 'autotune' / 'a-cache').write_bytes(b'x' * 5000)
  (tmp_path / 'notes.txt').write_bytes(b'x' * 5000)  # not JAX's: kept
  os.utime(tmp_path / 'notes.txt', (1, 1))
  assert backend.prune(tmp_path, 1000) == 1  # all fit; the empty one goes
  assert backend.prune(tmp_path, 600) == 2  # 300 and 200 go: 500 left
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'autotune', 'entry2-cache', 'entry3-cache', 'notes.txt']
  assert backend.prune(tmp_path, 0) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'autotune', 'notes.txt']
  assert (tmp_path / 'autotune' / 'a-cache').stat().st_size == 5000


@pytest.mark.slow
def test_a_second_run_reads_the_programs_the_first_wrote(tmp_path):
  """Two runs of the same shapes, the cache named (a CPU's is off unless
  named), JAX saying which programs it did not find: the first finds none
  and writes them; the second finds every one, writes nothing new, and
  its loaded programs give the same image."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
             JAX_EXPLAIN_CACHE_MISSES='1',
             **{backend.CACHE_ENV: str(tmp_path / 'xla')})
  flags = [f'--config.{k}={v}' for k, v in TINY.items()]
  miss = 'PERSISTENT COMPILATION CACHE MISS'

  def run(name):
    result = subprocess.run(
        [sys.executable, '-m', 'nst.run', *flags,
         f'--workdir={tmp_path / name}'], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr, {p.name for p in (tmp_path / 'xla').iterdir()}

  err, first = run('a')
  assert err.count(miss) >= 5, err
  assert len([n for n in first if n.endswith('-cache')]) >= 5, first
  err, second = run('b')
  if 'machine type' in err.lower():
    pytest.skip('XLA:CPU refuses its cached programs on this host')
  assert miss not in err and 'compilation cache' not in err, err
  assert second == first
  assert ((tmp_path / 'a' / 'final.png').read_bytes() ==
          (tmp_path / 'b' / 'final.png').read_bytes())
