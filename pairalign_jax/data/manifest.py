"""Manifest source: a TSV (header row) or JSONL file listing audio items.

Keys (TSV columns / JSON fields): `path` (required), optional `speaker`, `text`, `start`, `end`
(seconds; a region of the file), and optionally `id` and `content_id`. Relative paths resolve
against the manifest's folder. Defaults: `id` = the path relative to the manifest folder without
extension (plus `@start-end` for a region); `speaker` = 'unknown'; `content_id` = the normalized
`text` when given (same words = same content), else `id`. A `.jsonl`/`.json` suffix selects JSONL,
anything else TSV. The manifest is itself the index, so nothing is cached.

Splits: 'train' / 'validation' / 'test' ('heldout' = 'test') are speaker-disjoint hash parts of
the manifest (`folder.split_entries`), or 'all'. Parallel readings: rows of different speakers
with the same `content_id` (given, or the same normalized `text`) are other speakers' readings
of one content (`parallel_record`, for `config.data.cross_speaker_views`).
"""

import csv
import json
import os
from typing import Any

from pairalign_jax.data import folder
from pairalign_jax.data.librispeech import normalize_text

KEYS = ('path', 'speaker', 'text', 'start', 'end', 'id', 'content_id')


def _float_or_none(value, where: str) -> float | None:
  if value is None or (isinstance(value, str) and not value.strip()):
    return None
  try:
    return float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{where}: start/end must be seconds, got {value!r}') from e


def read_manifest(
  path: str, *, bad_lines: list[tuple[int, str]] | None = None
) -> list[dict[str, Any]]:
  """Rows of the manifest as dicts (`path` made absolute, `line` its line number).

  A malformed line (not JSON, no "path", start/end not seconds or end <= start) raises ValueError
  naming `<manifest>:<line>`; when a `bad_lines` list is given, it gets `(line, reason)` for each
  such line instead and the line is skipped (the tokenize CLI reports them like bad files). A
  TSV without a "path" column, or a manifest without a single item, raises in both cases.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'manifest {path!r} does not exist')
  base = os.path.dirname(os.path.abspath(path))
  rows = []
  if path.lower().endswith(('.jsonl', '.json')):
    with open(path, encoding='utf-8') as f:
      for line_no, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append((line_no, json.loads(line)))
          except json.JSONDecodeError as e:
            rows.append((line_no, ValueError(f'{path}:{line_no}: not valid JSON: {e}')))
  else:
    with open(path, encoding='utf-8', newline='') as f:
      reader = csv.DictReader(f, delimiter='\t')
      if not reader.fieldnames or 'path' not in reader.fieldnames:
        raise ValueError(
          f'{path}: the TSV header must name a "path" column, got {reader.fieldnames}'
        )
      # reader.line_num: the row's last physical line (a quoted field may span lines).
      rows = [(reader.line_num, row) for row in reader]
  entries = []
  for line_no, row in rows:
    try:
      entries.append(_entry(row, f'{path}:{line_no}', base, line_no))
    except ValueError as e:
      if bad_lines is None:
        raise
      bad_lines.append((line_no, str(e)))
  if not entries and not bad_lines:
    raise ValueError(f'manifest {path!r} lists no items')
  return entries


def _entry(row, where: str, base: str, line_no: int) -> dict[str, Any]:
  """One manifest row (a dict, or the ValueError its line gave) -> entry; ValueError naming
  `where`."""
  if isinstance(row, ValueError):
    raise row
  if not isinstance(row, dict) or not row.get('path'):
    raise ValueError(f'{where}: every row needs a "path"')
  rel = str(row['path'])
  abs_path = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(base, rel))
  start = _float_or_none(row.get('start'), where)
  end = _float_or_none(row.get('end'), where)
  if start is not None and end is not None and end <= start:
    raise ValueError(f'{where}: end ({end}) must be after start ({start})')
  item_id = row.get('id') or os.path.splitext(os.path.relpath(abs_path, base))[0]
  if (start is not None or end is not None) and not row.get('id'):
    item_id += f'@{start or 0:g}-{"" if end is None else f"{end:g}"}'
  text = row.get('text') or None
  entry = {
    'path': abs_path,
    'id': str(item_id),
    'speaker': str(row.get('speaker') or 'unknown'),
    'content_id': str(row.get('content_id') or (normalize_text(text) if text else item_id)),
    'start': start,
    'end': end,
    'line': line_no,
  }
  if text:
    entry['text'] = str(text)
  return entry


class ManifestSource(folder.IndexedAudioSource):
  """Items of a TSV/JSONL manifest (see the module docstring)."""

  name = 'manifest'

  def __init__(self, path: str, split: str = 'all', *, heldout_fraction: float = 0.1):
    entries = read_manifest(path)
    super().__init__(
      os.path.dirname(os.path.abspath(path)), folder.split_entries(entries, split, heldout_fraction)
    )
