"""nst.backend: the persistent compilation cache (where, when, pruning)."""
import os
import subprocess
import sys

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
  monkeypatch.setenv(backend.CACHE_ENV, 'off')
  jax.config.update('jax_compilation_cache_dir', None)
  assert backend.compile_cache('gpu') is None
  assert backend.compile_cache('tpu') is None
  assert jax.config.jax_compilation_cache_dir is None


def test_a_folder_that_cannot_be_written_leaves_the_cache_off(
    tmp_path, monkeypatch, capsys, jax_options):
  (tmp_path / 'file').write_text('not a folder')
  monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / 'file' / 'xla'))
  assert backend.compile_cache('gpu') is None
  assert jax.config.jax_compilation_cache_dir is None
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1, err
  assert err[0].startswith(
      f'compilation cache off: cannot write {tmp_path / "file" / "xla"} (')
  assert err[0].endswith(f'set {backend.CACHE_ENV} to another folder, or '
                         'to off')


def test_pruning_removes_the_oldest_files_until_the_rest_fit(tmp_path):
  for i, size in enumerate((300, 200, 100, 400)):  # oldest first
    path = tmp_path / f'entry{i}-cache'
    path.write_bytes(b'x' * size)
    os.utime(path, (1000 + i, 1000 + i))
  (tmp_path / 'autotune').mkdir()  # a subfolder: left alone
  (tmp_path / 'autotune' / 'a').write_bytes(b'x' * 5000)
  assert backend.prune(tmp_path, 1000) == 0  # 1000 bytes: all fit
  assert backend.prune(tmp_path, 600) == 2  # 300 and 200 go: 500 left
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'autotune', 'entry2-cache', 'entry3-cache']
  assert backend.prune(tmp_path, 0) == 2
  assert [p.name for p in tmp_path.iterdir()] == ['autotune']


@pytest.mark.slow
def test_a_second_run_reads_the_programs_the_first_wrote(tmp_path):
  """Two runs of the same shapes, the cache named (a CPU's is off unless
  named): the first writes its programs; the second asks for the same keys
  (it writes nothing new) and its loaded programs give the same image."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
             **{backend.CACHE_ENV: str(tmp_path / 'xla')})
  flags = [f'--config.{k}={v}' for k, v in TINY.items()]

  def run(name):
    result = subprocess.run(
        [sys.executable, '-m', 'nst.run', *flags,
         f'--workdir={tmp_path / name}'], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {p.name for p in (tmp_path / 'xla').iterdir()}

  first = run('a')
  assert len([n for n in first if n.endswith('-cache')]) >= 5, first
  assert run('b') == first
  assert ((tmp_path / 'a' / 'final.png').read_bytes() ==
          (tmp_path / 'b' / 'final.png').read_bytes())
