"""How far a run is and how long it has left: the console's progress line.

The time left is estimated from the scale plan and the log steps so far
(``estimate``): the steps left at the current scale at the rate measured
there, then each later scale's steps at that rate times (its pixels /
this scale's pixels) ** ``p``, plus each later scale's start (its targets
and compilation) as long as the current one's took. ``p``, how a step's
cost grows with its pixel count, is measured between the previous scale
and this one; before two scales have run it is ``EXPONENT``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nst import losses

# A step's cost ~ pixels ** EXPONENT until two scales are measured (on a
# 2-core CPU, the default run's 64 -> 128 -> 256 px steps: 0.63, then 0.78).
EXPONENT = 0.75

Plan = Sequence[tuple[Sequence[int], int]]   # (shape, steps) per scale


def scale_of(plan: Plan, step: int) -> int:
  """The scale that step number ``step`` is taken at (a scale's last step
  is its own; step 0 is the first scale's)."""
  done = 0
  for k, (_, steps) in enumerate(plan):
    done += steps
    if step <= done:
      return k
  return len(plan) - 1


def _rate(plan: Plan, history, scale: int):
  """Steps/s at ``scale`` between its first and latest log step after its
  start (the first, slowed by compiling, is the anchor), and those log
  steps; None for the rate while there are fewer than two."""
  start = sum(steps for _, steps in plan[:scale])
  points = [(s, t) for s, t in history if s > start
            and scale_of(plan, s) == scale]
  if len(points) < 2 or points[-1][1] <= points[0][1]:
    return None, points
  return ((points[-1][0] - points[0][0]) /
          (points[-1][1] - points[0][1]), points)


def estimate(plan: Plan, history: Sequence[tuple[int, float]]
             ) -> tuple[float, float] | None:
  """(seconds left in the run, seconds all of ``plan``'s steps take) after
  the log steps ``history`` ((step, seconds since the start) in order),
  or None until the current scale has two log steps to measure a rate
  from. The second number, without any scale's start, is what a further
  chunk of the same program costs (it compiles nothing)."""
  step, _ = history[-1]
  k = scale_of(plan, step)
  rate, points = _rate(plan, history, k)
  if rate is None:
    return None
  pixels = [shape[0] * shape[1] for shape, _ in plan]
  start = sum(steps for _, steps in plan[:k])
  before = [t for s, t in history if s < points[0][0]
            and (scale_of(plan, s) < k or s == start)]
  # The time this scale took to start: from the log step before it to
  # its first step, less the steps run at the rate since.
  began = points[0][1] - (points[0][0] - start) / rate
  start_s = max(0.0, began - before[-1]) if before else 0.0
  power = EXPONENT
  if k > 0:
    previous, _ = _rate(plan, history, k - 1)
    if previous:
      power = min(1.5, max(0.3, math.log(previous / rate)
                           / math.log(pixels[k] / pixels[k - 1])))
  cost = [(pixels[j] / pixels[k]) ** power / rate for j in range(len(plan))]
  left = (start + plan[k][1] - step) * cost[k] + sum(
      start_s + plan[j][1] * cost[j] for j in range(k + 1, len(plan)))
  return left, sum(plan[j][1] * cost[j] for j in range(len(plan)))


def prune(plan: Plan, history: Sequence[tuple[int, float]]
          ) -> list[tuple[int, float]]:
  """The log steps of ``history`` that ``estimate`` reads: per scale its
  first log step after its start, its last, and one at its start; so a
  long run's history stays a few entries and ``estimate`` of it is the
  same."""
  keep: dict = {}
  for s, t in history:
    k = scale_of(plan, s)
    start = sum(steps for _, steps in plan[:k])
    keep.setdefault((k, 'first' if s > start else 'start'), (s, t))
    keep[k, 'last'] = (s, t)
  return sorted(set(keep.values()))


def clock(seconds: float) -> str:
  """Seconds as ``m:ss``, or ``h:mm:ss`` from an hour."""
  seconds = max(0, int(round(seconds)))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


def line(*, total_steps: int, scales: int, chunk_size: int, named: bool,
         rows: list[dict], totals, rate: float, left_s: float | None,
         group: int = 0, chunk: int = 0, chunks: int = 1) -> str:
  """One console line per log step: a single run's losses, or a chunk's
  median, min and max (``totals``: each slot's total loss; ``named``:
  the members have sweep values), and the time left (``left_s``: of the
  whole run, every chunk of a sweep)."""
  first = rows[0]
  where = f'  ({first["size"]} px)' if scales > 1 else ''
  speed = f'  {rate:.2f} steps/s' if rate else ''
  if left_s is not None:
    speed += f'  {clock(left_s)} left'
  head = f'step {first["step"]:5d}/{total_steps}'
  if chunk_size == 1 and not named:
    parts = ''.join(f'  {name} {first[name]:.4e}' for name in losses.TERMS
                    if name in first)
    return f'{head}  loss {first["loss"]:.4e}{parts}{speed}{where}'
  real = np.asarray(totals[:chunk_size])
  ok = real[np.isfinite(real)]
  bad = chunk_size - ok.size
  summary = (f'loss median {np.median(ok):.4e} (min {ok.min():.4e}, max '
             f'{ok.max():.4e})' if ok.size else 'no finite loss')
  if ok.size and bad:
    summary += f', {bad} not finite'
  members = f'{chunk_size} member{"s" if chunk_size > 1 else ""}'
  return (f'group {group + 1} chunk {chunk + 1}/{chunks} ({members}) '
          f'{head}{where}  {summary}{speed}')
