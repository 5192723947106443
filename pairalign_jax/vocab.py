"""Token vocabulary: K codes, then BOS, EOS and PAD.

Codes are ``0 .. K-1``; ``BOS = K``, ``EOS = K + 1``, ``PAD = K + 2``; ``vocab_size = K + 3``.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Special-token ids for a codebook of ``codebook_size`` codes."""

  codebook_size: int

  def __post_init__(self):
    if self.codebook_size < 2:
      raise ValueError(f'codebook_size must be >= 2, got {self.codebook_size}')

  @property
  def bos(self) -> int:
    return self.codebook_size

  @property
  def eos(self) -> int:
    return self.codebook_size + 1

  @property
  def pad(self) -> int:
    return self.codebook_size + 2

  @property
  def size(self) -> int:
    return self.codebook_size + 3

  def is_code(self, token: int) -> bool:
    return 0 <= token < self.codebook_size
