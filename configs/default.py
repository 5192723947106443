"""The base configuration (the "base" model size): `--config=configs/default.py`.

The documented tree, every key with its default and the reasons for it, is
`pairalign_jax/default_config.py`: the library validates each run against it
(`config_validation`) and completes configs saved by older versions from it
(`config_lib.upgrade`), so it lives with the library and this file re-exports it. Other configs
start from `get_config()` and change what they need.
"""

from pairalign_jax.default_config import get_config

__all__ = ['get_config']
