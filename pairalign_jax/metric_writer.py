"""Metrics to JSONL (one object per line) and TensorBoard event files, from process 0 only.

CLU's default writer needs TensorFlow; tensorboardX writes the same event files without it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np


def _to_python(value: Any) -> Any:
  value = np.asarray(value)
  if value.size != 1:
    return value.tolist()
  value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf
  return value


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/`."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step)}
    for key, value in scalars.items():
      record[key] = _to_python(value)
      if isinstance(record[key], (int, float)):
        self._tb.add_scalar(key, record[key], int(step))
    self._jsonl.write(json.dumps(record, sort_keys=True) + '\n')
    self._jsonl.flush()

  def flush(self) -> None:
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
      self.enabled = False


def read_jsonl(path: str) -> list[dict]:
  """Reads a metrics.jsonl file back (for tests and reports)."""
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
