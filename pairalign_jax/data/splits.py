"""Split names shared by every source: 'train', 'validation' (choices), 'test' (claims).

'heldout' is the test split's name in configs written before the validation split existed.
"""

SPLITS = ('train', 'validation', 'test')


def canonical_split(split: str, *, also: tuple[str, ...] = ()) -> str:
  """One of `SPLITS` (or of `also`): 'heldout' -> 'test'; anything else -> ValueError."""
  split = 'test' if split == 'heldout' else split
  if split not in SPLITS + also:
    raise ValueError(
      f"split must be one of {SPLITS + also} (or 'heldout', an alias of 'test'), got {split!r}"
    )
  return split
