"""Sweeps: expansion, batched == looped, sharded == unsharded, outputs."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from helpers import (random_vgg19, run_one, sweep_images, tiny_config,
                     tiny_inputs, tiny_sweep, tiny_sweep_file)
from nst import (engine, images, memory, report, runner, sharding, sweep,
                 vgg)
from nst import targets as nst_targets
from nst import step as nst_step
from nst.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('sweep_worker.py')
PARAMS = random_vgg19()


def _single_runs(config):
  """Each member of ``config`` run on its own (a group of one)."""
  _, members = sweep.expand(config)
  out = {}
  for m in members:
    out[m.index] = run_one(m.config, PARAMS)
  return out


# A batched convolution sums in another order than a single one, so the
# images differ by float rounding (1e-4 of the 0-255 scale). Adam carries
# that through unchanged; L-BFGS's line search amplifies it step by step
# (measured on one member: 1e-4 after 1 step, 0.014 after 2, 0.54 after 3),
# so L-BFGS is compared after 2 steps, which exercise its memory update.
STEPS = {'adam': 3, 'lbfgs': 2}
ATOL = {'adam': 1e-3, 'lbfgs': 0.05}


@pytest.fixture(scope='module')
def batched():
  """{optimizer: the 4-member sweep run as one batch on one device}."""
  return {opt: sweep_images(tiny_sweep(opt, num_steps=n))
          for opt, n in STEPS.items()}


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', ['adam', 'lbfgs'])
def test_batched_sweep_equals_separate_runs(batched, optimizer):
  single = _single_runs(tiny_sweep(optimizer, num_steps=STEPS[optimizer]))
  together = batched[optimizer]
  assert sorted(together) == sorted(single) == [0, 1, 2, 3]
  for i, (image, metrics) in single.items():
    np.testing.assert_allclose(together[i][0], image, rtol=1e-5,
                               atol=ATOL[optimizer])
    for k in ('loss', 'content', 'style', 'tv'):
      np.testing.assert_allclose(together[i][1][k], metrics[k], rtol=1e-5)
    assert together[i][1]['step'] == STEPS[optimizer]
  # The members differ from each other (a sweep that ignored its axes would
  # also "match" if every single run ignored them the same way).
  losses = [m['loss'] for _, m in single.values()]
  assert len(set(np.round(np.log10(losses), 3))) == 4


def test_chunk_size_0_chooses_all_members_when_they_fit(monkeypatch):
  configs = [tiny_config(optimizer='lbfgs', style_weight=w)
             for w in (1.0, 2.0, 3.0, 4.0, 5.0)]
  monkeypatch.setattr(memory, 'available',
                      lambda: {'host': (64 << 30, 'MemAvailable')})
  size, why = engine.choose_chunk(configs, 1)
  assert size == 5 and why.startswith('sweep: all 5 members in one batch (')
  assert engine.choose_chunk(configs, 2)[0] == 6  # a multiple of devices
  # Memory for two members and a bit: chunks of 2.
  one = memory.estimate(configs, chunk_size=1).on_host
  two = memory.estimate(configs, chunk_size=2).on_host
  monkeypatch.setattr(memory, 'available', lambda: {
      'host': ((two + memory.estimate(configs, chunk_size=3).on_host) // 2,
               'MemAvailable')})
  assert one < two
  size, why = engine.choose_chunk(configs, 1)
  assert size == 2 and 'chunks of 2 of the 5 members, the most that fit' in why
  # A line search on a CPU: one member per device, whatever the memory.
  zoom = [tiny_config(optimizer='lbfgs_zoom', style_weight=w)
          for w in (1.0, 2.0, 3.0)]
  size, why = engine.choose_chunk(zoom, 2)
  assert size == 2 and "lbfgs_zoom's line search" in why
  assert engine.choose_chunk(configs, 3, memory_check=False) == (
      6, 'sweep: all 5 members in one batch (no memory check)')


def _worker(*args, devices=4, env=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             **(env or {}))
  return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)],
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=400)
  assert proc.returncode == 0, out


@pytest.mark.slow
@pytest.mark.parametrize('devices,chunk', [(4, 0), (3, 2)])
def test_sharded_sweep_equals_unsharded(batched, tmp_path, devices, chunk):
  # (3, 2): chunks of 2 rounded up to 3 devices: 3 members + 1 with 2 pads.
  out = tmp_path / 'sharded.npz'
  _finish(_worker(out, 'adam', devices, chunk))
  sharded = np.load(out)
  assert int(sharded['n_devices']) == devices
  for i, (image, metrics) in batched['adam'].items():
    np.testing.assert_allclose(sharded[f'image{i}'], image, rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(sharded[f'loss{i}'], metrics['loss'],
                               rtol=1e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_each_write_their_own_members(batched, tmp_path):
  """jax.distributed over 2 local processes x 2 CPU devices each."""
  env = {'JAX_COORDINATOR_ADDRESS': f'localhost:{_free_port()}',
         'JAX_NUM_PROCESSES': '2'}
  workdir = tmp_path / 'sweep'
  procs = [_worker('--multiprocess', tmp_path / f'p{p}.npz', workdir,
                   devices=2, env={**env, 'JAX_PROCESS_ID': str(p)})
           for p in (0, 1)]
  for p in procs:
    _finish(p)
  got = [np.load(tmp_path / f'p{p}.npz') for p in (0, 1)]
  assert [int(g['process']) for g in got] == [0, 1]
  assert all(int(g['devices']) == 4 for g in got)
  written = np.array([g['written'] for g in got])
  assert (written.sum(axis=0) == 1).all()  # each member by exactly one
  assert written.sum(axis=1).tolist() == [2, 2]
  expected = [batched['adam'][i][1]['loss'] for i in range(4)]
  for g in got:  # every process sees every member's losses
    np.testing.assert_allclose(g['loss'], expected, rtol=1e-5)
  rows = list(csv.DictReader(open(workdir / 'results.csv')))
  assert [int(r['member']) for r in rows] == [0, 1, 2, 3]
  for i in range(4):
    png = np.asarray(Image.open(workdir / f'members/{i:04d}.png'))
    expected_png = images.deprocess(batched['adam'][i][0])
    assert np.abs(png.astype(int) - expected_png).max() <= 1


def _two_process_errors(tmp_path, workdir_, *args) -> list[str]:
  """Runs the sweep worker as two jax.distributed processes on
  ``workdir_`` (``args``: the worker's further arguments); each one's
  error line. Neither waits for the other: both must end."""
  env = {'JAX_COORDINATOR_ADDRESS': f'localhost:{_free_port()}',
         'JAX_NUM_PROCESSES': '2'}
  procs = [_worker('--multiprocess', tmp_path / f'p{p}.npz', workdir_, *args,
                   devices=1, env={**env, 'JAX_PROCESS_ID': str(p)})
           for p in (0, 1)]
  for p in procs:
    _finish(p)
  return [str(np.load(tmp_path / f'p{p}.npz')['error']) for p in (0, 1)]


@pytest.mark.slow
def test_a_workdir_in_use_stops_every_process_with_one_error(tmp_path):
  import fcntl
  workdir_ = tmp_path / 'sweep'
  workdir_.mkdir()
  with open(workdir_ / '.lock', 'w') as lock:  # as a running nst.run
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.write('12345\n')
    lock.flush()
    errors = _two_process_errors(tmp_path, workdir_)
  assert 'in use by process 12345' in errors[0]
  assert 'process 0 refused the workdir' in errors[1]
  assert [p.name for p in workdir_.iterdir()] == ['.lock']


@pytest.mark.slow
def test_one_process_short_of_memory_stops_every_process(tmp_path):
  workdir_ = tmp_path / 'sweep'
  errors = _two_process_errors(tmp_path, workdir_, 0, 0, 1)
  assert 'another process refused the run for its memory' in errors[0]
  assert 'where 1 B is available (a test)' in errors[1]
  assert not workdir_.exists()


@pytest.mark.slow
def test_a_stop_asked_of_one_process_stops_both_and_resumes(batched,
                                                           tmp_path):
  """Process 1 alone asks to stop after step 1 of 3: both stop there (the
  lead checkpoints the chunk), and two resumed processes finish the sweep
  with the images of an uninterrupted single-process run."""
  workdir = tmp_path / 'sweep'

  def both(*args):
    env = {'JAX_COORDINATOR_ADDRESS': f'localhost:{_free_port()}',
           'JAX_NUM_PROCESSES': '2'}
    procs = [_worker('--multiprocess', tmp_path / f'p{p}.npz', workdir,
                     *args, devices=2, env={**env, 'JAX_PROCESS_ID': str(p)})
             for p in (0, 1)]
    for p in procs:
      _finish(p)
    return [np.load(tmp_path / f'p{p}.npz') for p in (0, 1)]

  stopped = both(1)
  assert [int(g['stopped']) for g in stopped] == [1, 1]
  assert (workdir / 'checkpoint.npz').is_file()
  assert not (workdir / 'results.csv').exists()
  resumed = both(0, 1)
  expected = [batched['adam'][i][1]['loss'] for i in range(4)]
  for g in resumed:
    np.testing.assert_allclose(g['loss'], expected, rtol=1e-5)
  for i in range(4):
    png = np.asarray(Image.open(workdir / f'members/{i:04d}.png'))
    expected_png = images.deprocess(batched['adam'][i][0])
    assert np.abs(png.astype(int) - expected_png).max() <= 1
  assert not (workdir / 'checkpoint.npz').exists()


@pytest.mark.slow
def test_sigterm_to_one_process_of_the_cli_stops_both(tmp_path):
  """`python -m nst.run` as two processes: SIGTERM to process 1 only; both
  stop after the same step and exit as if signalled, without a traceback,
  and the lead leaves the chunk's checkpoint."""
  import signal
  config_file = tiny_sweep_file(tmp_path / 'tiny_sweep.py',
                                'c = tiny_sweep(num_steps=400, log_every=1)')
  workdir = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}',
             JAX_NUM_PROCESSES='2')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'nst.run', '--config', str(config_file),
       f'--workdir={workdir}'], cwd=ROOT, env={**env, 'JAX_PROCESS_ID': str(p)},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for p in (0, 1)]
  for line in procs[0].stdout:  # the lead logs; the steps have begun
    if 'step     2/400' in line:
      procs[1].send_signal(signal.SIGTERM)
      break
  errs = [p.communicate(timeout=300)[1] for p in procs]
  for p, err in zip(procs, errs):
    assert p.returncode == 128 + signal.SIGTERM, err
    assert 'Traceback' not in err and 'stopped after step' in err, err
  steps = {err.split('stopped after step ')[1].split(';')[0] for err in errs}
  assert len(steps) == 1 and 2 <= int(steps.pop()) < 400
  assert (workdir / 'checkpoint.npz').is_file()
  assert not (workdir / 'results.csv').exists()


@pytest.mark.slow
def test_controls_sweep_in_one_batch_equal_to_separate_runs():
  """Averaging, colour preservation, blend weights and style scale vary per
  member of one batch; multi-scale runs the whole batch through each scale.
  (Average pooling: with max pooling, two inputs of a window within float
  rounding of each other can route the gradient to another pixel in the
  batch than alone, and Adam's first steps, near sign(gradient), turn that
  into a pixel moved 2 x learning_rate apart: 4.0 on one 2-core AMD host,
  where every other member matched bit for bit.)"""
  config = tiny_sweep('adam', num_steps=2, scales=(16,), scale_steps=(2,),
                      style_image='nst:swirls,skimage:coffee',
                      style_layers=('conv1_1', 'conv2_1', 'conv3_1'),
                      pooling='avg')
  config.sweep.axes = ml_collections.ConfigDict({
      'avg_decay': (0.0, 0.8), 'preserve_colour': ('luminance', 'histogram'),
      'style_blend_weights': ((1.0, 0.0), (1.0, 2.0)),
      'style_scale': (1.0, 0.75)})
  config.sweep.zip = (('avg_decay', 'preserve_colour', 'style_blend_weights'),)
  config.sweep.rows, config.sweep.cols = 'avg_decay', 'style_scale'
  _, members = sweep.expand(config)
  assert len(sweep.group(members)) == 1
  together = sweep_images(config)
  single = _single_runs(config)
  for i, (image, metrics) in single.items():
    np.testing.assert_allclose(together[i][0], image, rtol=1e-5, atol=1e-2)
    for k in ('loss', 'content', 'style', 'tv'):
      np.testing.assert_allclose(together[i][1][k], metrics[k], rtol=1e-4)
    assert together[i][1]['step'] == 4 and together[i][1]['size'] == 32
  losses = [m['loss'] for _, m in single.values()]
  assert len(set(np.round(np.log10(losses), 3))) == 4


def test_layer_set_as_weight_vector_equals_layer_list():
  config = tiny_config(style_layers=('conv1_1', 'conv3_1'),
                       style_layer_weights=(0.3, 0.7))
  model = vgg.VGG(network='vgg19')
  inputs = tiny_inputs()
  content = inputs.content
  union = vgg.layer_names('vgg19')[:vgg.layer_names('vgg19').index('conv5_1') + 1]
  union = tuple(l for l in union if l.startswith('conv') and l.endswith('_1'))
  as_list = nst_targets.make_targets(config, model, PARAMS, inputs)
  as_vector = nst_targets.make_targets(config, model, PARAMS, inputs,
                                   style_layers=union)
  assert list(as_vector.terms['style']['weights']) == list(union)
  np.testing.assert_allclose(
      [as_vector.terms['style']['weights'][l] for l in union], [0.3, 0, 0.7, 0, 0])
  x = nst_targets.init_image(tiny_config(init='noise', init_noise_std=30.0),
                         content)
  a = nst_step.objective(model, PARAMS, as_list, x)
  b = nst_step.objective(model, PARAMS, as_vector, x)
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
  np.testing.assert_allclose(a[1]['style'], b[1]['style'], rtol=1e-6)
  assert float(a[1]['style']) > 0


def test_expand_product_zip_and_ratio():
  c = tiny_sweep()
  ax, members = sweep.expand(c)
  assert list(ax) == ['style_layers', 'ratio']  # rows, then cols
  assert [(m.coords['style_layers'], m.coords['ratio']) for m in members] == [
      (0, 0), (0, 1), (1, 0), (1, 1)]
  m = members[1]
  assert m.config.style_layers == ('conv1_1',)
  assert m.config.style_weight == pytest.approx(m.config.content_weight / 0.1)
  assert 'sweep' not in m.config
  c.sweep.axes.content_weight = (1.0, 2.0)
  c.sweep.zip = (('ratio', 'content_weight'),)
  _, members = sweep.expand(c)
  assert len(members) == 4
  assert [(m.values['ratio'], m.values['content_weight']) for m in members
          ][:2] == [(1e-3, 1.0), (1e-1, 2.0)]
  assert members[1].config.style_weight == pytest.approx(2.0 / 0.1)


def test_a_sweep_section_needs_only_its_axes():
  c = tiny_config()
  c.sweep = ml_collections.ConfigDict()
  c.sweep.axes = ml_collections.ConfigDict({'seed': (0, 1, 2)})
  ax, members = sweep.expand(c)
  assert ax == {'seed': (0, 1, 2)}
  assert [m.config.seed for m in members] == [0, 1, 2]
  assert sweep.settings(c).chunk_size == 0 and sweep.settings(c).zip == ()


def test_layer_set_keeps_base_weights_by_name():
  c = tiny_sweep(style_layers=('conv1_1', 'conv2_1', 'conv3_1'),
                 style_layer_weights=(1.0, 0.5, 0.25))
  c.sweep.axes.style_layers = (('conv3_1',), ('conv1_1', 'conv3_1'))
  _, members = sweep.expand(c)
  assert members[0].config.style_layer_weights == (0.25,)
  assert members[2].config.style_layer_weights == (1.0, 0.25)
  c.sweep.axes.style_layers = (('conv4_1',),)
  with pytest.raises(UserError, match=r"\['conv4_1'\], which the base "
                     'style_layer_weights gives no weight'):
    sweep.expand(c)


def test_layer_set_keeps_base_trims_and_distances_by_name():
  c = tiny_sweep(style_layers=('conv1_1', 'conv2_1', 'conv3_1'),
                 style_layer_weights=(),
                 style_layer_trims=(0.0, 0.05, 0.1),
                 style_layer_losses=('gram', 'mean', 'gram'))
  c.sweep.axes.style_layers = (('conv3_1',), ('conv2_1', 'conv4_1'))
  _, members = sweep.expand(c)
  assert members[0].config.style_layer_trims == (0.1,)
  assert members[0].config.style_layer_losses == ('gram',)
  # A layer the base does not name: no trim, the base's style_loss.
  assert members[2].config.style_layer_trims == (0.05, 0.0)
  assert members[2].config.style_layer_losses == ('mean', 'gram')


def test_folder_axis_lists_its_images(tmp_path):
  for name in ('b.png', 'a.jpg', 'notes.txt'):
    (tmp_path / name).write_bytes(b'')
  c = tiny_sweep()
  c.sweep.axes.content_image = str(tmp_path)
  assert sweep.axes(c)['content_image'] == (str(tmp_path / 'a.jpg'),
                                            str(tmp_path / 'b.png'))
  c = tiny_sweep()
  c.sweep.axes.content_image = ('skimage:coffee', str(tmp_path))
  assert sweep.axes(c)['content_image'] == (
      'skimage:coffee', str(tmp_path / 'a.jpg'), str(tmp_path / 'b.png'))


@pytest.mark.parametrize('change,message', [
    (lambda s: s.axes.__setattr__('colour', (1, 2)),
     r"sweep axis 'colour' is not a config field"),
    (lambda s: s.axes.__setattr__('style_weight', (1.0,)),
     'ratio and style_weight both set style_weight'),
    (lambda s: s.axes.__setattr__('num_steps', 'five'),
     r"sweep axis num_steps='five': give a tuple of values"),
    (lambda s: s.axes.__setattr__('num_steps', ('five',)),
     r"sweep axis num_steps='five' does not fit the field"),
    (lambda s: s.axes.__setattr__('ratio', (0.0,)),
     r'ratio value 0.0: accepted is a finite number > 0'),
    (lambda s: s.axes.__setattr__('learning_rate', (1.0, -1.0)),
     r'sweep member 1 \(.*learning_rate=-1\): learning_rate=-1.0'),
    (lambda s: s.__setattr__('zip', (('ratio', 'style_layers', 'seed'),)),
     r"sweep.zip names 'seed', which is not a sweep axis"),
    (lambda s: (s.axes.__setattr__('seed', (1, 2, 3)),
                s.__setattr__('zip', (('ratio', 'seed'),))),
     r'different lengths'),
    (lambda s: s.__setattr__('rows', 'seed'),
     r"sweep.rows/cols name 'seed', which is not a sweep axis"),
    (lambda s: s.axes.__setattr__('content_image', 'no/such/folder'),
     r"must name a folder of images"),
    (lambda s: s.__setattr__('chunk_size', -1),
     r'sweep.chunk_size=-1: accepted is an integer >= 0'),
    (lambda s: s.__setattr__('colums', 'ratio'),
     r"unknown sweep field\(s\) \['colums'\]; accepted: axes, zip, rows"),
])
def test_bad_sweeps_name_the_value(change, message):
  c = tiny_sweep()
  change(c.sweep)
  with pytest.raises(UserError, match=message):
    sweep.expand(c)


@pytest.mark.slow
def test_outputs_grid_csv_and_index(tmp_path):
  c = tiny_sweep(num_steps=1)
  c.sweep.axes.seed = (0, 1)  # a third axis: one sheet per seed
  results = runner.run(c, tmp_path)
  assert len(results) == 8 and all(r.written for r in results)
  rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
  assert len(rows) == 8
  assert list(rows[0])[:4] == ['member', 'style_layers', 'ratio', 'seed']
  assert rows[5]['style_layers'] == 'conv1_1 conv2_1 conv3_1'
  assert float(rows[5]['ratio']) == 1e-3 and rows[5]['seed'] == '1'
  assert all(r['status'] == 'ok' and r['steps'] == '1' for r in rows)
  by_member = {r.member.index: r for r in results}
  for r in rows:
    assert float(r['loss']) == pytest.approx(
        by_member[int(r['member'])].metrics['loss'], rel=1e-6)
  metrics = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert sorted((m['member'], m['step']) for m in metrics) == sorted(
      (i, s) for i in range(8) for s in (0, 1))
  assert json.loads((tmp_path / 'members/0005.json').read_text())[
      'style_layers'] == ['conv1_1', 'conv2_1', 'conv3_1']

  # Two sheets (seed 0, seed 1), each 2 rows x 2 columns of 21x32 images.
  for k, seed in ((1, 0), (2, 1)):
    sheet = np.asarray(Image.open(tmp_path / f'contact_sheet_{k:02d}.png'))
    ax = sweep.axes(c)
    grids = report.sheets(ax, results, 'style_layers', 'ratio')
    g = grids[k - 1]
    assert g['title'] == f'seed={seed}'
    assert g['row_labels'] == ['conv1_1', 'conv1_1\nconv2_1\nconv3_1']
    assert g['col_labels'] == ['0.001', '0.1']
    pictures = [[np.asarray(Image.open(tmp_path / r.image)) for r in row]
                for row in g['cells']]
    redrawn, layout = report.contact_sheet(
        pictures, g['row_labels'], g['col_labels'],
        corner='style_layers \\ ratio', title=g['title'])
    np.testing.assert_array_equal(sheet, np.asarray(redrawn))
    assert len(layout['cells']) == 4
    for (r, col), (x0, y0, x1, y1) in layout['cells'].items():
      cell = sheet[y0:y1, x0:x1]
      member = g['cells'][r][col]
      assert member.member.values['seed'] == seed
      assert member.member.coords['style_layers'] == r
      h, w = pictures[r][col].shape[:2]
      top, left = (y1 - y0 - h) // 2, (x1 - x0 - w) // 2
      np.testing.assert_array_equal(cell[top:top + h, left:left + w],
                                    pictures[r][col])
    for x0, y0, x1, y1 in layout['rows'] + layout['cols']:
      assert (sheet[y0:y1, x0:x1] < 100).any()  # a label is drawn there
  page = (tmp_path / 'index.html').read_text()
  assert page.count('<img src="members/') == 8
  assert 'contact_sheet_01.png' in page and 'seed=1' in page
  assert 'conv1_1<br>conv2_1<br>conv3_1' in page


def test_contact_sheet_size_follows_the_grid():
  cells = [[np.full((20, 30, 3), 60 * r + 20 * c, np.uint8) for c in range(3)]
           for r in range(2)]
  cells[1][2] = None
  sheet, layout = report.contact_sheet(cells, ['a', 'b'], ['x', 'y', 'z'],
                                       pad=6)
  x0, y0, x1, y1 = layout['cells'][0, 0]
  assert (x1 - x0, y1 - y0) == (32, 32)  # at least 32 px, images centred
  width, height = sheet.size
  assert width == layout['cells'][0, 2][2] + 6
  assert height == layout['cells'][1, 0][3] + 6
  xs = sorted({b[0] for b in layout['cells'].values()})
  assert np.diff(xs).tolist() == [38, 38]
  x0, y0, x1, y1 = layout['cells'][1, 2]  # empty: white inside its outline
  assert (np.asarray(sheet)[y0 + 1:y1 - 1, x0 + 1:x1 - 1] == 255).all()
  x0, y0, x1, y1 = layout['cells'][1, 1]
  np.testing.assert_array_equal(
      np.asarray(sheet)[y0 + 6:y0 + 26, x0 + 1:x1 - 1], cells[1][1])


def test_every_sweep_config_sets_every_sweep_field():
  # Only fields the file sets can be overridden on the command line (as
  # the batching note's --config.sweep.chunk_size=1 is).
  import runpy
  paths = sorted((ROOT / 'configs' / 'sweeps').glob('*.py'))
  assert len(paths) >= 4
  for path in paths:
    section = runpy.run_path(str(path))['get_config']().sweep
    assert set(section) == set(sweep.SWEEP_DEFAULTS), path.name


def test_overriding_a_sweep_field_the_file_leaves_out_says_how(tmp_path):
  config_file = tiny_sweep_file(tmp_path / 'no_chunk.py', 'c = tiny_sweep()',
                                "del c.sweep['chunk_size']")
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config', str(config_file),
       '--config.sweep.chunk_size=1', f'--workdir={tmp_path / "o"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      'error: unknown or invalid config field: chunk_size; sweep.chunk_size '
      'can be overridden only when the config file sets it: add '
      'c.sweep.chunk_size = 0 to its sweep section']
  assert not (tmp_path / 'o').exists()


def _nst_run(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config',
       str(ROOT / 'configs' / 'sweeps' / 'fig3.py'), '--config.weights=random',
       '--config.image_size=32', '--config.num_steps=1',
       '--config.optimizer=adam', *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_fig3_config_runs_from_the_command_line(tmp_path):
  result = _nst_run("--config.sweep.axes.ratio=(1e-4, 1e-2)",
                    f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert '10 members in 1 group(s)' in result.stdout
  rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
  assert [r['ratio'] for r in rows[:2]] == ['0.0001', '0.01']
  assert rows[-1]['style_layers'] == 'relu1_1 relu2_1 relu3_1 relu4_1 relu5_1'
  assert len(rows) == 10
  assert len(list((tmp_path / 'members').glob('*.png'))) == 10
  sheet = Image.open(tmp_path / 'contact_sheet.png')
  assert sheet.size[0] > 2 * 32 and sheet.size[1] > 5 * 32
  # A second run into the same workdir is refused; nothing is lost.
  again = _nst_run(f'--workdir={tmp_path}')
  assert again.returncode == 2
  assert again.stderr.strip().splitlines() == [
      f"error: workdir '{tmp_path}' already holds files; choose another "
      '--workdir, pass --resume to continue a stopped run there, or '
      '--overwrite']
  assert len(list(csv.DictReader(open(tmp_path / 'results.csv')))) == 10


def test_bad_sweep_axis_on_the_command_line_is_one_line(tmp_path):
  result = _nst_run("--config.sweep.axes.ratio=(1e-4, -1.0)",
                    f'--workdir={tmp_path / "out"}')
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: sweep member 1 (')
  assert 'ratio value -1.0: accepted is a finite number > 0' in lines[0]
  assert not (tmp_path / 'out').exists()


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:overflow encountered in cast')
def test_a_diverging_member_leaves_the_others_alone(tmp_path, capsys):
  c = tiny_sweep(num_steps=2, clip_pixels=False)
  c.sweep.axes.style_layers = (('conv1_1',),)
  c.sweep.axes.ratio = (1e-3,)
  # Adam's first step moves every pixel by about the learning rate: 1e30
  # overflows the features (a weight float32 cannot hold is refused).
  c.sweep.axes.learning_rate = (2.0, 1e30)
  c.sweep.cols = 'learning_rate'
  results = runner.run(c, tmp_path)
  assert [r.status for r in results] == ['ok', 'diverged']
  # Named on the console when its chunk ends, with its axis values.
  said = [l for l in capsys.readouterr().out.splitlines() if 'diverged' in l]
  assert said == ["member 1 (style_layers=conv1_1, learning_rate=1e+30, "
                  "ratio=0.001) diverged: the loss became nan by "
                  "step 2 (last finite: step 0); the learning rate or a loss "
                  "weight is likely too high; its output of step 0 is "
                  "members/0001.last_finite_00000.png"]
  assert np.isfinite(results[0].metrics['loss'])
  assert not np.isfinite(results[1].metrics['loss'])
  alone = sweep_images(tiny_sweep(num_steps=2, clip_pixels=False))[0][1]
  np.testing.assert_allclose(results[0].metrics['loss'], alone['loss'],
                             rtol=1e-5)
  rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
  assert [r['status'] for r in rows] == ['ok', 'diverged']
  assert [r['image'] for r in rows] == ['members/0000.png', '']
  assert not (tmp_path / 'members/0001.png').exists()
  assert (tmp_path / 'contact_sheet.png').is_file()


def test_masks_and_style_loss_split_a_sweep_into_programs(tmp_path):
  mask = tmp_path / 'mask.png'
  Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
  config = tiny_sweep()
  config.sweep.axes = ml_collections.ConfigDict({
      'style_masks': ('', str(mask)), 'style_loss': ('gram', 'mean_cov'),
      'avg_decay': (0.0, 0.5)})
  config.sweep.rows, config.sweep.cols = 'style_masks', 'style_loss'
  _, members = sweep.expand(config)
  groups = sweep.group(members)
  # avg_decay is an array of the program; masks and the loss are not.
  assert [[m.index for m in g] for g in groups] == [
      [0, 1], [2, 3], [4, 5], [6, 7]]
  assert {(g[0].config.style_masks, g[0].config.style_loss)
          for g in groups} == {('', 'gram'), ('', 'mean_cov'),
                               (str(mask), 'gram'), (str(mask), 'mean_cov')}


def test_a_sweep_of_four_chunks_compiles_its_step_once(tmp_path):
  c = tiny_sweep(num_steps=2)
  c.sweep.chunk_size = 1  # four chunks of one member
  engine.compiled.cache_clear()
  results = runner.run(c, tmp_path)
  assert sorted(r.chunk for r in results) == [0, 1, 2, 3]
  (member, *_), = {r.member.program: r for r in results}.items()
  step, init, evaluate, finish, _, _ = engine.compiled(
      member.update, sharding.member_mesh(), 1)
  assert engine.compiled.cache_info().currsize == 1
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert init._cache_size() == finish._cache_size() == 1


def test_every_members_images_are_checked_at_every_scale_first(tmp_path):
  # Member 1's style is too small for its layers only at the coarse
  # scale (64 px * 0.3 = 19 px; at 32 px, 10 px): refused, naming the
  # member, before anything is written.
  c = tiny_sweep(image_size=64, scales=(0.5,), scale_steps=(1,))
  c.sweep.axes = ml_collections.ConfigDict({'style_scale': (1.0, 0.3)})
  c.sweep.rows, c.sweep.cols = 'style_scale', ''
  with pytest.raises(UserError) as e:
    runner.run(c, tmp_path / 'o')
  assert str(e.value).startswith(
      "sweep member 1 (style_scale=0.3): style image 'nst:swirls' at "
      'style_scale=0.3 and size 32 is 10x10 px')
  assert not (tmp_path / 'o').exists()


def test_joining_a_job_says_it_waits_for_every_process(monkeypatch, capsys):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '2')
  import jax
  def never(**kwargs):
    raise RuntimeError('timed out waiting for the other processes')
  monkeypatch.setattr(jax.distributed, 'initialize', never)
  with pytest.raises(UserError, match='could not join a multi-process job '
                     r'\(timed out waiting'):
    sweep.initialize_distributed('auto')
  assert capsys.readouterr().out == (
      'joining a job of 4 processes as process 2 (coordinator '
      '10.0.0.1:1234); waiting until every one has started\n')


@pytest.mark.parametrize('var, value, message', [
    ('JAX_NUM_PROCESSES', 'two', "JAX_NUM_PROCESSES='two': accepted is a "
     'whole number >= 1'),
    ('JAX_NUM_PROCESSES', '0', "JAX_NUM_PROCESSES='0': accepted is a whole "
     'number >= 1'),
    ('JAX_PROCESS_ID', '-1', "JAX_PROCESS_ID='-1': accepted is a whole "
     'number >= 0'),
    ('JAX_PROCESS_ID', '2', r'JAX_PROCESS_ID=2: accepted is 0 to 1 '
     r'\(JAX_NUM_PROCESSES=2\)')])
def test_a_bad_process_count_or_id_is_named(monkeypatch, var, value,
                                            message):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '0')
  monkeypatch.setenv(var, value)
  with pytest.raises(UserError, match=message):
    sweep.initialize_distributed('auto')


@pytest.mark.parametrize('axis, tail', [
    ('image_size', ' (add c.sweep.axes.image_size = (...) to it to sweep '
     'image_size)'),
    # ml_collections would suggest the axis it has ("style_weight").
    ('tv_weight', ' (add c.sweep.axes.tv_weight = (...) to it to sweep '
     'tv_weight)'),
    ('imagesize', ', and imagesize is no config field')])
def test_overriding_an_axis_the_file_does_not_sweep_names_the_axis(
    tmp_path, axis, tail):
  # configs/sweeps/strength.py sweeps style_weight only.
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'nst.run', '--config',
       'configs/sweeps/strength.py', f"--config.sweep.axes.{axis}=(0,32)",
       f'--workdir={tmp_path / "o"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: --config.sweep.axes.{axis}: the sweep of "
      f"'configs/sweeps/strength.py' has no axis {axis}; only the axes "
      'the file sets can be overridden' + tail]
  assert not (tmp_path / 'o').exists()
