"""Checkpoints: what an interrupted run needs to continue exactly.

One ``.npz`` file, written atomically (a temporary file, then a rename), so
a crash leaves the previous checkpoint whole. It holds

  done     steps finished, counted across scales;
  image    the iterate after ``done`` steps (float32, that scale's size);
  state    every leaf of the optimiser and iterate-average state
           (``stylize.init_state``), one array per leaf, keyed by its
           pytree path (``state['opt'][0].mu``);
  config   the run's resolved config as JSON.

The run's only randomness is the noise initialisation, drawn from
``config.seed``, so the config stands for the PRNG state. Nothing is
pickled: the file is read with ``allow_pickle=False`` and the state's leaves
are fitted into the structure that ``init_state`` builds, each checked for
shape and dtype.
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

from nst import images
from nst.errors import UserError

NAME = 'checkpoint.npz'


@dataclasses.dataclass
class Checkpoint:
  done: int
  image: np.ndarray             # (H, W, 3), or (members, H, W, 3) in a sweep
  state: dict[str, np.ndarray]  # flat: pytree path -> leaf
  config: dict[str, Any]
  extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _flat(tree) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def save(path: str | os.PathLike, done: int, image, state,
         config_json: str, extra: dict[str, np.ndarray] | None = None
         ) -> None:
  """Writes a checkpoint of ``done`` steps atomically (``extra``: more
  named arrays, e.g. a sweep chunk's member indices)."""
  arrays = {'done': np.int64(done), 'image': np.asarray(image, np.float32),
            'config': np.array(config_json)}
  arrays.update({'extra/' + k: np.asarray(v) for k, v in (extra or {}).items()})
  arrays.update({'state' + k: np.asarray(v)
                 for k, v in _flat(jax.device_get(state)).items()})
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  images.write_atomic(path, buf.getvalue())


def load(path: str | os.PathLike) -> Checkpoint:
  """Reads a checkpoint; a UserError if it is missing or unreadable."""
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    done, image = int(arrays.pop('done')), arrays.pop('image')
    config = json.loads(str(arrays.pop('config')))
  except FileNotFoundError:
    raise UserError(f'no checkpoint at {str(path)!r}') from None
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise UserError(f'cannot read checkpoint {str(path)!r}: {e}') from None
  if image.ndim not in (3, 4) or image.shape[-1] != 3 or done < 0:
    raise UserError(f'checkpoint {str(path)!r} is malformed: image '
                    f'{image.shape}, done {done}')
  state = {k[len('state'):]: v for k, v in arrays.items()
           if k.startswith('state')}
  extra = {k[len('extra/'):]: v for k, v in arrays.items()
           if k.startswith('extra/')}
  return Checkpoint(done, image, state, config, extra)


def fit_state(checkpoint: Checkpoint, template):
  """The checkpoint's state (host arrays) in the structure of ``template``
  (the state, or its ``jax.eval_shape``, that ``init_state`` makes for the
  same optimiser and image shape); a UserError naming each leaf that is
  missing or differs."""
  want = _flat(template)
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


def check_same_config(saved: dict[str, Any], config, workdir) -> None:
  """A UserError naming each field where ``config`` differs from the
  stopped run's ``saved`` (parsed JSON) config."""
  now = json.loads(config.to_json())
  differ = [f'{k} ({saved.get(k)!r} there, {now.get(k)!r} now)'
            for k in sorted(set(now) | set(saved))
            if saved.get(k) != now.get(k)]
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
