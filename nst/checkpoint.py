"""Checkpoints: what an interrupted run needs to continue exactly.

One ``.npz`` file, written atomically (a temporary file, then a rename), so
a crash leaves the previous checkpoint whole. It holds

  format   ``FORMAT``; files without it, or another, are refused;
  done     steps finished, counted across scales;
  image    the chunk's iterates after ``done`` steps, (members, H, W, 3),
           float32, at that scale's size (a single run: one member);
  state/.. every leaf of the optimiser and iterate-average state
           (``nst.step.State``), one array per leaf under a stable
           ``/``-joined name (``leaf_names``: ``state/opt/ScaleByAdamState/
           mu``), the same whatever the order of optax's chain;
  extra/.. the chunk's member indices (``members``), which of them are still
           finite (``finite``), and their inputs' fingerprints;
  config   the run's resolved config as JSON.

The run's only randomness is the noise initialisation, drawn from
``config.seed``, so the config stands for the PRNG state. Nothing is
pickled: the file is read with ``allow_pickle=False`` and the state's leaves
are fitted into the structure that ``nst.step.init_state`` builds, each
checked for shape and dtype.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from nst import files, images
from nst.errors import UserError

NAME = 'checkpoint.npz'
# 3: the state counts its objective evaluations; 'lbfgs' is the fixed-step
# L-BFGS (2's L-BFGS state is now lbfgs_zoom's).
FORMAT = 3


@dataclasses.dataclass
class Checkpoint:
  done: int
  image: np.ndarray             # (members, H, W, 3)
  state: Any                    # a State of host arrays; after ``load``,
                                # flat: leaf name -> leaf (``fit_state``)
  config: dict[str, Any]
  extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


# What a user who cannot continue does instead (a plain rerun is refused:
# the workdir holds the stopped run's files).
RESTART = ('start the run again with --overwrite in place of --resume (it '
           "replaces the stopped run's files)")

def leaf_names(tree, prefix: str = '') -> dict[str, Any]:
  """{name: leaf} with ``/``-joined names built from field and key names:
  a dataclass's or named tuple's fields, a dict's keys, and for a tuple
  of named tuples (an optax chain's state) each one's class name -- so the
  names do not depend on the chain's order or on JAX's key formatting.
  None and empty states hold no leaves."""
  if tree is None:
    return {}
  if dataclasses.is_dataclass(tree):
    items = [(f.name, getattr(tree, f.name))
             for f in dataclasses.fields(tree)]
  elif isinstance(tree, tuple) and hasattr(tree, '_fields'):
    items = list(zip(tree._fields, tree))
  elif isinstance(tree, dict):
    items = [(str(k), v) for k, v in sorted(tree.items())]
  elif isinstance(tree, (tuple, list)):
    items, seen = [], {}
    for i, v in enumerate(tree):
      name = type(v).__name__ if hasattr(v, '_fields') else str(i)
      seen[name] = seen.get(name, 0) + 1
      items.append((name if seen[name] == 1 else f'{name}.{seen[name]}', v))
  else:
    return {prefix: tree}
  out = {}
  for name, value in items:
    out.update(leaf_names(value, f'{prefix}/{name}' if prefix else name))
  return out


def _named_leaves(tree) -> dict[str, Any]:
  """``leaf_names``, checked against JAX's own flattening: the same leaves
  in the same order (else a state of a kind it does not know)."""
  named = leaf_names(tree)
  if [id(v) for v in named.values()] != [id(v) for v in jax.tree.leaves(
      tree)]:
    raise ValueError('leaf_names disagrees with jax.tree.leaves for a '
                     f'{type(tree).__name__}: names {list(named)}')
  return named


def save(path: str | os.PathLike, ckpt: Checkpoint, config_json: str
         ) -> None:
  """Writes ``ckpt`` atomically, with the run's config."""
  arrays = {'format': np.int64(FORMAT), 'done': np.int64(ckpt.done),
            'image': np.asarray(ckpt.image, np.float32),
            'config': np.array(config_json)}
  arrays.update({'extra/' + k: np.asarray(v)
                 for k, v in ckpt.extra.items()})
  arrays.update({'state/' + k: np.asarray(v) for k, v in _named_leaves(
      jax.device_get(ckpt.state)).items()})
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  images.write_atomic(path, buf.getvalue())


def load(path: str | os.PathLike) -> Checkpoint:
  """Reads a checkpoint; a UserError if it is missing or unreadable."""
  if not os.path.exists(path):
    raise UserError(f'no checkpoint at {str(path)!r}')
  files.check_regular(path, 'checkpoint')
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    if int(arrays.pop('format', 1)) != FORMAT:
      raise UserError(f'checkpoint {str(path)!r} was written by an earlier '
                      'version of nst, whose checkpoints this one cannot '
                      f'continue; {RESTART}')
    done, image = arrays.pop('done'), arrays.pop('image')
    config = arrays.pop('config')
  except FileNotFoundError:
    raise UserError(f'no checkpoint at {str(path)!r}') from None
  except EOFError:  # np.load of an empty file
    raise UserError(f'cannot read checkpoint {str(path)!r}: it is empty; '
                    f'{RESTART}') from None
  except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
    raise UserError(f'cannot read checkpoint {str(path)!r}: {e}; '
                    f'{RESTART}') from None
  config = _json_object(config)
  if problem := _malformed(done, image, config):
    raise UserError(f'checkpoint {str(path)!r} is malformed: {problem}; '
                    f'{RESTART}')
  done = int(done)
  state = {k[len('state/'):]: v for k, v in arrays.items()
           if k.startswith('state/')}
  extra = {k[len('extra/'):]: v for k, v in arrays.items()
           if k.startswith('extra/')}
  return Checkpoint(done, image, state, config, extra)


def _json_object(text: np.ndarray) -> dict | None:
  """The JSON object a string array holds, else None."""
  if text.shape or text.dtype.kind != 'U':
    return None
  try:
    value = json.loads(str(text))
  except ValueError:
    return None
  return value if isinstance(value, dict) else None


def _malformed(done: np.ndarray, image: np.ndarray, config) -> str:
  """What is wrong with a checkpoint's step, images and config ('' if
  nothing)."""
  def kind(a):
    return f'a {a.dtype} array' + (f' of shape {a.shape}' if a.shape else '')
  if done.shape or not np.issubdtype(done.dtype, np.integer):
    return f'done is {kind(done)}, not an integer'
  if done < 0:
    return f'done is {int(done)}'
  if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.float32:
    return (f'image is {kind(image)}, not float32 of shape (members, height, '
            'width, 3)')
  if config is None:
    return 'config is not a JSON object'
  return ''


def fit_state(checkpoint: Checkpoint, template):
  """The checkpoint's state (host arrays) in the structure of ``template``
  (the state, or its ``jax.eval_shape``, that ``nst.step.init_state``
  makes for the same optimiser and image shape); a UserError naming each
  leaf that is missing or differs."""
  want = _named_leaves(template)
  got = checkpoint.state
  problems = [f'{k}: missing' for k in want if k not in got]
  problems += [
      f'{k}: {got[k].dtype}{list(got[k].shape)}, expected '
      f'{np.dtype(v.dtype)}{list(v.shape)}'
      for k, v in want.items() if k in got and (
          got[k].shape != tuple(v.shape) or got[k].dtype != np.dtype(v.dtype))]
  problems += [f'{k}: unexpected' for k in got if k not in want]
  if problems:
    raise UserError('the checkpoint does not fit this run (another optimiser '
                    'or image size?): ' + '; '.join(problems))
  return jax.tree.unflatten(jax.tree.structure(template),
                            [got[k] for k in want])


# Fields a resumed run may change: how a sweep is cut into chunks changes
# no result (a chunk stopped half way then runs again from its start).
MAY_CHANGE = ('sweep.chunk_size',)


def _flat(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def check_same_config(saved: dict[str, Any], config, workdir) -> None:
  """A UserError naming each field (``sweep.axes.style_weight``, not the
  whole section) where ``config`` differs from the stopped run's ``saved``
  (parsed JSON) config; ``MAY_CHANGE`` may."""
  now, saved = _flat(json.loads(config.to_json())), _flat(saved)
  differ = [f'{k} ({saved[k]!r} there, {now.get(k)!r} now)' if k in saved
            else f'{k} (not in that run\'s config: a field added since it '
            f'started; {now[k]!r} now, --config.{k}=... for the behaviour '
            'it ran with)'
            for k in sorted(set(now) | set(saved))
            if saved.get(k) != now.get(k) and k not in MAY_CHANGE]
  if differ:
    raise UserError(f'--resume needs the config of the run in '
                    f'{str(workdir)!r}; these fields differ: '
                    + ', '.join(differ))


def keep_rows(path: Path, keep: Callable[[dict], bool]) -> None:
  """Rewrites a metrics.jsonl file with only the rows ``keep`` accepts
  (a resumed run writes the others again). A line a crash left half
  written is dropped."""
  if not path.is_file():
    return
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and keep(row):
      rows.append(line + '\n')
  images.write_atomic(path, ''.join(rows).encode())
