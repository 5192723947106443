"""pairalign_jax: PairAlign audio tokenization by sequence-level self-alignment, in JAX/Flax."""

__version__ = '0.1.0'
