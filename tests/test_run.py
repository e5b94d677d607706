"""``python -m nst.run`` end to end, in a subprocess, with random weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_config, tiny_flags
from nst import fields, images
from nst import runner
from nst.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_flags(save_every=1)  # on chelsea, with L-BFGS


def nst_run(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'default.py'), *args],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_steps_end_to_end(tmp_path):
  result = nst_run(*TINY, f'--workdir={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr
  out = tmp_path / 'out'
  final = np.asarray(Image.open(out / 'final.png'))
  assert final.shape == (21, 32, 3)  # chelsea is 451x300
  assert (out / 'step_00001.png').is_file() and (out / 'step_00002.png').is_file()
  rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [0, 2]  # log_every=10; last always
  assert rows[-1]['loss'] < rows[0]['loss']
  assert set(rows[0]) >= {'loss', 'content', 'style', 'tv', 'steps_per_s'}
  config = json.loads((out / 'config.json').read_text())
  assert config['image_size'] == 32 and config['optimizer'] == 'lbfgs'
  assert 'step     2/2' in result.stdout


def test_existing_workdir_is_not_overwritten(tmp_path):
  (tmp_path / 'final.png').write_bytes(b'earlier result')
  result = nst_run(*TINY, f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert 'already holds files' in result.stderr and '--overwrite' in result.stderr
  assert 'Traceback' not in result.stderr
  assert (tmp_path / 'final.png').read_bytes() == b'earlier result'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['final.png']


def test_a_run_too_large_for_memory_is_one_line_and_writes_nothing(tmp_path):
  result = nst_run('--config.image_size=100000', '--config.style_scale=400',
                   '--config.lbfgs_memory=10000000',
                   f'--workdir={tmp_path / "o"}')
  assert result.returncode == 2
  [line] = result.stderr.strip().splitlines()
  assert line.startswith('error: not enough memory: this run needs an '
                         'estimated ') and 'is available' in line
  assert '--nomemory_check' in line
  assert not (tmp_path / 'o').exists()


def test_misspelt_field_is_one_clear_error(tmp_path):
  result = nst_run('--config.style_wieght=3', f'--workdir={tmp_path / "o"}')
  assert result.returncode == 2
  assert 'style_wieght' in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'o').exists()


def test_misspelt_field_without_config_is_one_clear_error(tmp_path):
  # --config left out (its default, configs/default.py): the override is
  # checked by the same parser, not while nst.run is imported.
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config.style_wieght=3',
       f'--workdir={tmp_path / "o"}'], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: unknown or invalid config field: 'style_wieght'; did you mean "
      '"style_weight" instead of "style_wieght"?']
  assert not (tmp_path / 'o').exists()


@pytest.fixture
def cli(monkeypatch, capsys):
  """``nst.run``'s flag parsing (and, given ``run``, its ``main`` with
  ``runner.run`` replaced by ``run``) in this process: returns the exit
  status and the lines written to stderr."""
  from absl import flags
  from nst import run as nst_run_module

  def call(*args, run=None):
    argv = ['nst.run', *args]
    # ml_collections reads the overrides from sys.argv.
    monkeypatch.setattr(sys, 'argv', argv)
    # Each config file loads into a fresh module (ml_collections would
    # run it in the namespace of the one loaded before).
    sys.modules.pop('config_config', None)
    if run is not None:
      monkeypatch.setattr(runner, 'run', run)
    status = 0
    try:
      rest = nst_run_module.parse_flags(argv)
      if run is not None:
        nst_run_module.main(rest)
    except SystemExit as e:
      status = e.code
    finally:
      flags.FLAGS.unparse_flags()
      for name in [n for n in flags.FLAGS if n.startswith('config.')]:
        delattr(flags.FLAGS, name)
    return status, capsys.readouterr().err.splitlines()

  return call


def _config_files(tmp):
  """(path, expected line) for config files that cannot be used."""
  (tmp / 'folder').mkdir()
  cases = [(tmp / 'defualt.py', "config file '{}' does not exist"),
           (tmp / 'folder', "config file '{}' is a directory, not a file")]
  for name, body, problem in (
      ('syntax.py', 'def get_config(:\n', 'line 1: SyntaxError: invalid '
       'syntax'),
      ('value.py', 'def get_config():\n  raise ValueError("oops")\n',
       'line 2, in get_config: ValueError: oops'),
      ('runtime.py', 'def get_config():\n  raise RuntimeError("boom")\n',
       'line 2, in get_config: RuntimeError: boom'),
      ('key.py', 'def get_config():\n  return {}["a"]\n',
       "line 2, in get_config: KeyError: 'a'"),
      ('imports.py', 'import nst_nope\n', "line 1: ModuleNotFoundError: "
       "No module named 'nst_nope'")):
    (tmp / name).write_text(body)
    cases.append((tmp / name, "config file '{}', " + problem))
  (tmp / 'none.py').write_text('c = 1\n')
  cases.append((tmp / 'none.py', "config file '{}' defines no get_config()"))
  (tmp / 'config.json').write_text('{"num_steps": 3, "remat": false}\n')
  cases.append((tmp / 'config.json', "config file '{}' is JSON; a config is "
                "a .py file with a get_config() (a run's config.json records "
                'its values: start from configs/default.py and set those)'))
  (tmp / 'int.py').write_text('def get_config():\n  return 3\n')
  cases.append((tmp / 'int.py', "config file '{}': get_config() returned "
                'int; accepted is an ml_collections.ConfigDict'))
  return cases


def test_a_config_file_that_cannot_be_used_is_one_line(tmp_path, cli):
  cases = _config_files(tmp_path)
  got = [cli(f'--config={path}', f'--workdir={tmp_path / "o"}')
         for path, _ in cases]
  assert got == [(2, ['error: ' + line.format(path)]) for path, line in cases]
  assert not (tmp_path / 'o').exists()


def test_a_stray_argument_is_one_line(cli):
  config = f'--config={ROOT / "configs" / "default.py"}'
  assert cli(config, 'extra') == (2, [
      "error: unexpected argument 'extra': only flags are accepted "
      '(--config=FILE, --config.FIELD=VALUE, --workdir=DIR, ...)'])
  # After '--', nothing is a flag's value.
  assert cli(config, '--', 'extra') == (2, [
      "error: unexpected argument 'extra': only flags are accepted "
      '(--config=FILE, --config.FIELD=VALUE, --workdir=DIR, ...)'])
  # A boolean flag takes no value after a space: False is left over.
  assert cli(config, '--config.clip_pixels', 'False') == (2, [
      "error: unexpected argument 'False': a flag's value follows '=' "
      '(--config.clip_pixels=False)'])


def test_named_pipes_are_refused_not_opened(tmp_path, cli):
  from helpers import without_blocking
  pipe = tmp_path / 'pipe'
  os.mkfifo(pipe)
  status, err = without_blocking(lambda: cli(f'--config={pipe}'), pipe)
  assert (status, err) == (2, [f"error: config file '{pipe}' is not a "
                               'regular file'])
  refused = f"^image '{pipe}' is not a regular file$"
  for overrides, message in (
      ({'content_image': str(pipe)}, refused),
      ({'style_image': str(pipe)}, refused),
      ({'style_masks': str(pipe)}, refused),
      ({'init': str(pipe)}, f"^init='{pipe}'; accepted: content, noise, or "
       'the path of an existing image$')):
    with pytest.raises(UserError, match=message):
      without_blocking(lambda: runner.run(tiny_config(**overrides),
                                               tmp_path / 'o'), pipe)
    assert not (tmp_path / 'o').exists()


def test_a_full_disk_exits_1_other_write_errors_2(tmp_path, cli):
  from nst.errors import DiskFull

  def failing(error):
    def run(*args, **kwargs):
      raise error
    return run

  args = (f'--config={ROOT / "configs" / "default.py"}',
          f'--workdir={tmp_path}')
  assert cli(*args, run=failing(DiskFull("cannot write 'x': No space left "
                                         'on device'))) == (
      1, ["error: cannot write 'x': No space left on device"])
  assert cli(*args, run=failing(UserError("cannot write 'x': Read-only "
                                          'file system'))) == (
      2, ["error: cannot write 'x': Read-only file system"])


def test_the_default_config_is_the_repositorys_from_elsewhere(tmp_path,
                                                             monkeypatch):
  from nst import run
  assert fields.default_path() == 'configs/default.py'  # tests run in ROOT
  monkeypatch.chdir(tmp_path)
  assert fields.default_path() == str(ROOT / 'configs' / 'default.py')
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'default.py').write_text('')
  assert fields.default_path() == 'configs/default.py'  # this folder's own


@pytest.mark.slow
def test_config_mistakes_from_the_command_line(tmp_path):
  """The real entry point: one line and status 2 (the cases themselves are
  test_a_config_file_that_cannot_be_used_is_one_line's), and the default
  config found from another folder."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  for args, line in (
      (['--config=nope.py'], "error: config file 'nope.py' does not exist"),
      (['extra'], "error: unexpected argument 'extra': only flags are "
       'accepted (--config=FILE, --config.FIELD=VALUE, --workdir=DIR, ...)'),
      (['--resume'], 'error: --resume needs --workdir: the directory of the '
       'run to continue')):
    result = subprocess.run([sys.executable, '-m', 'nst.run', *args],
                            cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert (result.returncode, result.stderr.splitlines()) == (2, [line])


def test_missing_image_is_one_clear_error(tmp_path):
  result = nst_run(*TINY, '--config.style_image=nope.jpg',
                   f'--workdir={tmp_path / "o"}')
  assert result.returncode == 2
  assert "image 'nope.jpg' does not exist" in result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_finite_image(tmp_path):
  # Unclipped Adam steps of 1e30: the features overflow at step 1.
  out = tmp_path / 'o'
  result = nst_run(*TINY, '--config.num_steps=5', '--config.log_every=1',
                   '--config.optimizer=adam', '--config.clip_pixels=False',
                   '--config.learning_rate=1e30',
                   f'--workdir={out}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'by step 1 (last finite: step 0)' in result.stderr
  assert 'learning rate or a loss weight is likely too high' in result.stderr
  kept = out / 'last_finite_00000.png'
  assert str(kept) in result.stderr and not (out / 'final.png').exists()
  rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
  # The row of the step where it was seen is kept, with its loss.
  assert [r['step'] for r in rows] == [0, 1]
  assert not np.isfinite(rows[1]['loss'])
  # Step 0's output is the content image (init='content').
  np.testing.assert_array_equal(
      np.asarray(Image.open(kept)),
      images.deprocess(images.load('skimage:chelsea', 32)))


@pytest.mark.slow
def test_default_workdir_is_new_each_run(tmp_path):
  for _ in range(2):
    result = nst_run(*TINY, '--config.num_steps=0', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
  runs = sorted((tmp_path / 'runs').iterdir())
  assert len(runs) == 2 and all((r / 'final.png').is_file() for r in runs)


@pytest.mark.slow
def test_paper_config_runs_from_another_directory(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'paper.py'), *TINY, '--config.num_steps=1',
       '--workdir=out'], cwd=tmp_path, env=env, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  config = json.loads((tmp_path / 'out' / 'config.json').read_text())
  assert (config['optimizer'], config['pooling'], config['init']) == (
      'lbfgs', 'avg', 'noise')
  assert (tmp_path / 'out' / 'final.png').is_file()


@pytest.mark.slow
def test_i2v_config_runs_and_names_its_weights(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  args = [sys.executable, '-m', 'nst.run', '--config',
          str(ROOT / 'configs' / 'i2v.py')]
  result = subprocess.run(args + ['--workdir=missing'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert "weights file 'i2v.npz' does not exist" in result.stderr
  result = subprocess.run(args + [*TINY, '--workdir=out'], cwd=tmp_path,
                          env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr
  rows = [json.loads(l) for l in
          (tmp_path / 'out' / 'metrics.jsonl').read_text().splitlines()]
  assert rows[-1]['loss'] < rows[0]['loss']


@pytest.mark.slow
def test_controls_from_the_command_line(tmp_path):
  """Two styles, one masked region each, luminance only, two scales."""
  mask = np.zeros((21, 32), np.uint8)
  mask[:, :16] = 255
  Image.fromarray(mask).save(tmp_path / 'left.png')
  Image.fromarray(255 - mask).save(tmp_path / 'right.png')
  result = nst_run(*TINY, '--config.style_image=nst:swirls,skimage:coffee',
                   f'--config.style_masks={tmp_path / "left.png"},'
                   f'{tmp_path / "right.png"}',
                   '--config.preserve_colour=luminance',
                   '--config.style_layers=("conv1_1", "conv2_1")',
                   '--config.style_layer_weights=()',
                   '--config.style_layer_trims=()',
                   '--config.content_layers=("conv2_2",)',
                   '--config.scales=(16,)', '--config.scale_steps=(1,)',
                   f'--workdir={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr
  rows = [json.loads(l) for l in
          (tmp_path / 'out' / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['step'], r['size']) for r in rows] == [(0, 16), (1, 16), (3, 32)]
  assert np.asarray(Image.open(tmp_path / 'out' / 'final.png')).shape == (
      21, 32, 3)


@pytest.mark.slow
def test_bad_control_values_are_one_clear_error(tmp_path):
  for args, message in (
      (['--config.preserve_colour=yes'], "preserve_colour='yes'; accepted"),
      (['--config.style_image=nst:swirls,skimage:coffee',
        '--config.style_masks=nope.png,nope2.png'],
       "image 'nope.png' does not exist")):
    result = nst_run(*TINY, *args, f'--workdir={tmp_path / "o"}')
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and 'Traceback' not in result.stderr
    assert not (tmp_path / 'o').exists()


def _bad_inputs(tmp):
  """(config overrides, message) for bad images and config values."""
  Image.new('RGB', (64, 64)).save(tmp / 'ok.png')
  data = (tmp / 'ok.png').read_bytes()
  (tmp / 'cut.png').write_bytes(data[:len(data) // 2])
  (tmp / 'text.png').write_text('not an image')
  Image.new('RGB', (1, 1)).save(tmp / 'dot.png')
  (tmp / 'empty.png').write_bytes(b'')
  return [
      ({'content_image': str(tmp / 'empty.png')}, 'cannot read image'),
      ({'content_image': str(tmp / 'none.png')}, 'does not exist'),
      ({'content_image': str(tmp)}, 'is a directory'),
      ({'style_image': str(tmp / 'text.png')}, 'cannot read image'),
      ({'style_image': str(tmp / 'cut.png')}, 'cannot read image'),
      ({'content_image': str(tmp / 'dot.png')}, 'is 1x1 px'),
      ({'content_image': str(tmp / 'ok.png'), 'max_image_pixels': 100},
       'more than max_image_pixels=100'),
      ({'style_layers': ('conv1_1', 'relu9_1')}, r"\['relu9_1'\].*accepted: "
       'conv1_1, relu1_1'),
      ({'content_layers': (), 'style_layers': ()}, 'both empty'),
      ({'style_weight': -1.0}, 'style_weight=-1.0'),
      ({'content_weight': float('inf')}, 'content_weight=inf'),
      ({'image_size': 4}, 'image_size=4 is too small'),
      ({'optimizer': 'sgd'}, "unknown optimizer 'sgd'"),
      ({'init': 'bogus'}, "init='bogus'"),
      ({'style_image': 'nst:swirls,nst:swirls', 'style_blend_weights': (1.0,)},
       'style_blend_weights'),
  ]


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
  workdir = tmp_path / 'previous'
  workdir.mkdir()
  for name in ('final.png', 'metrics.jsonl'):
    (workdir / name).write_bytes(name.encode())
  (workdir / 'config.json').write_text(tiny_config().to_json())
  before = {p.name: p.read_bytes() for p in workdir.iterdir()}
  for overrides, message in _bad_inputs(tmp_path):
    with pytest.raises(UserError, match=message):
      runner.run(tiny_config(**overrides), workdir, overwrite=True)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before
    with pytest.raises(UserError, match=message):
      runner.run(tiny_config(**overrides), tmp_path / 'new')
    assert not (tmp_path / 'new').exists()


def test_unreadable_file_is_one_clear_error(tmp_path, monkeypatch):
  Image.new('RGB', (8, 8)).save(tmp_path / 'locked.png')

  def denied(*args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(tmp_path / 'locked.png'))

  monkeypatch.setattr(Image, 'open', denied)  # tests may run as root
  with pytest.raises(UserError, match=r"cannot read image .*locked.png.*"
                     'Permission denied'):
    images.read_rgb(str(tmp_path / 'locked.png'))


def test_a_config_lacking_a_field_is_one_error():
  import ml_collections
  from nst import spec
  c = ml_collections.ConfigDict({'content_image': 'skimage:chelsea',
                                 'image_size': 64})
  with pytest.raises(UserError, match="^the config has no field 'network': "
                     "a config file starts from configs/default.py's "
                     'get_config()'):
    spec.check(c)


@pytest.mark.slow
def test_a_closed_stdout_and_a_tilde_workdir_keep_the_run(tmp_path):
  # `... | head -1`: the console goes, the run finishes and writes its
  # files; `--workdir=~/x` is the home folder's x, not a folder named '~'.
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
             HOME=str(tmp_path))
  proc = subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'default.py'),
       *tiny_flags(num_steps=6, log_every=1), '--workdir=~/piped'],
      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  proc.stdout.readline()
  proc.stdout.close()
  err = proc.stderr.read().decode()
  assert proc.wait(timeout=300) == 0, err
  assert 'Traceback' not in err and 'Broken' not in err, err
  assert (tmp_path / 'piped' / 'final.png').is_file()
  assert not (tmp_path / '~').exists()


@pytest.mark.slow
def test_a_platform_or_cluster_that_is_not_there_is_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cuda')
  strength = str(ROOT / 'configs' / 'sweeps' / 'strength.py')
  for config, extra, env_, says in (
      (strength, [], env, "JAX_PLATFORMS='cuda': no JAX backend could start"),
      (strength, ['--distributed=on'], None,
       '--distributed=on: could not join a multi-process job'),
      (str(ROOT / 'configs' / 'default.py'), ['--distributed=on'], None,
       '--distributed=on is for sweeps (a config with a sweep section); a '
       'single run is one process')):
    result = subprocess.run(
        [sys.executable, '-m', 'nst.run', '--config', config, *TINY, *extra,
         f'--workdir={tmp_path / "out"}'],
        cwd=ROOT, env=env_ or dict(os.environ, PYTHONPATH=str(ROOT),
                                   JAX_PLATFORMS='cpu'),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ' + says), lines
    assert not (tmp_path / 'out').exists()
