"""Devices and processes: the member mesh, and moving a chunk's pytrees
between the hosts and the member-sharded arrays on every device of every
process (``put``, ``replicate``, ``gather``, ``local_slots``), and agreeing
across processes (``any_process``)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding


def member_mesh(devices=None) -> Mesh:
  """A one-axis mesh, ``member``, over every device of every process."""
  return Mesh(np.asarray(devices or jax.devices()), ('member',))


def put(make: Callable[[int], Any], n: int, sharding: NamedSharding):
  """A pytree of global arrays whose slot ``j`` is ``make(j)``.

  Each process computes only the slots that live on its own devices.
  """
  local = sorted({j for index in
                  sharding.addressable_devices_indices_map((n,)).values()
                  for j in range(n)[index[0]]})
  trees = {j: jax.device_get(make(j)) for j in local}
  treedef = jax.tree.structure(trees[local[0]])
  leaves = {j: jax.tree.leaves(t) for j, t in trees.items()}

  def leaf(k):
    shape = (n,) + np.shape(leaves[local[0]][k])
    return jax.make_array_from_callback(
        shape, sharding, lambda index: np.stack(
            [np.asarray(leaves[j][k]) for j in range(n)[index[0]]]))

  return jax.tree.unflatten(treedef,
                            [leaf(k) for k in range(len(leaves[local[0]]))])


def replicate(tree, sharding: NamedSharding):
  """Host arrays put on every device of ``sharding``, whole."""
  return jax.tree.map(lambda a: jax.make_array_from_callback(
      np.shape(a), sharding, lambda index: np.asarray(a)[index]), tree)


def gather(tree):
  """Every process gets the full (host) value of member-sharded arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
  """``flag`` or'ed over the processes: all of them stop after the same
  step, whichever was asked (one that stopped alone would leave the others
  waiting in its checkpoint's collectives). Costs a collective, and so a
  wait for the step in flight, per step of a multi-process sweep."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def local_slots(array) -> dict[int, np.ndarray]:
  """{slot: value} for the slots of ``array`` held by this process."""
  out = {}
  for shard in array.addressable_shards:
    data = np.asarray(shard.data)
    for j, value in zip(range(array.shape[0])[shard.index[0]], data):
      out[j] = value
  return out
