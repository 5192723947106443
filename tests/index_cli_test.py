"""The index and search CLIs (pairalign_jax.index, pairalign_jax.search) on the tiny checkpoint
of tokenizer_test.py: incremental indexing with bad files, and a query found where it was cut."""

import json
import logging
import os

from absl import flags
import jax
import jax.numpy as jnp
import pytest
import soundfile as sf
import tokenizer_test

from pairalign_jax import index as index_cli
from pairalign_jax import search as search_cli
from pairalign_jax.archive import index_store
from pairalign_jax.archive import tokenizers as tokenizers_lib
from pairalign_jax.tokenizer import Tokenizer

SR = tokenizer_test.SR


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
  return tokenizer_test.tiny_workdir(tmp_path_factory)


def test_index_then_search(workdir, tmp_path):
  audio = tmp_path / 'audio'
  os.makedirs(audio)
  w = tokenizer_test.make_waves(3, seed=7, seconds=5.0)
  sf.write(audio / 'a.wav', w[0][: 2 * SR], SR)  # one window
  sf.write(audio / 'b.wav', w[1], SR)  # windows at 0, 1, 2 s
  (audio / 'garbage.wav').write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk' * 40)
  d = str(tmp_path / 'index')
  first = index_cli.run(workdir, str(audio), d, batch_size=4, progress=False)
  assert (first['indexed'], first['already_indexed']) == (2, 0)
  assert first['skipped'] == {'unreadable': 1}
  assert first['windows'] == 1 + 3 and first['index']['bad_files'] == 1

  sf.write(audio / 'c.wav', w[2][: 3 * SR], SR)
  second = index_cli.run(workdir, str(audio), d, batch_size=4, progress=False)
  assert (second['indexed'], second['already_indexed']) == (1, 2)
  assert second['index']['files'] == 3 and second['index']['windows'] == 5
  with pytest.raises(ValueError, match='kind'):
    index_cli.run(workdir, str(audio), d, kind='vq', progress=False)

  # The whole of a.wav as the query: the same zero-padded window as in the index, so its
  # tokens (those inside the clip) are a substring of a.wav's string: an exact hit there.
  out = tmp_path / 'hits.json'
  result = search_cli.run(d, str(audio / 'a.wav'), top_k=3, output=str(out))
  assert result['query']['tokens']
  best = result['hits'][0]
  assert os.path.basename(best['file']) == 'a.wav' and best['score'] == 1.0
  assert 0.0 <= best['start'] < best['end'] <= 2.0
  assert json.loads(out.read_text())['hits'] == result['hits']
  scores = [h['score'] for h in result['hits']]
  assert scores == sorted(scores, reverse=True)
  table = search_cli.format_hits(result)
  assert 'a.wav' in table.splitlines()[2]
  # A region of b.wav, tokenized in its context window; the Python API gives the same hits.
  region = search_cli.run(d, str(audio / 'b.wav'), start=1.0, end=2.5, top_k=2)
  index = index_store.Index.open(d)
  wave, _ = sf.read(audio / 'b.wav', dtype='float32')
  api = index.search(wave[: int(4.25 * SR)], 2, sample_rate=SR, start=1.0, end=2.5)
  assert [h.to_dict() for h in api] == region['hits']
  with pytest.raises(ValueError, match='longer than one'):
    index.search(wave, 2, sample_rate=SR)
  with pytest.raises(ValueError, match='--end'):
    search_cli.run(d, str(audio / 'b.wav'), start=2.0, end=1.0)
  # Only the model that wrote the index searches it (its fingerprint is in the manifest).
  tok = Tokenizer.from_checkpoint(workdir, batch_size=4)
  index_store.Index.open(d, tokenizer=tokenizers_lib.from_tokenizer(tok))
  retrained = jax.tree.map(
    lambda x: x * 1.001 if jnp.issubdtype(x.dtype, jnp.floating) else x, tok.variables
  )
  other = tokenizers_lib.from_tokenizer(Tokenizer(tok.config, retrained, batch_size=4))
  with pytest.raises(ValueError, match='written by another model'):
    index_store.Index.open(d, tokenizer=other)
  with pytest.raises(ValueError, match="kind='vq' has none to set"):
    tokenizers_lib.from_tokenizer(tok, kind='vq', eos_bias=0.5)


def test_a_short_clip_without_context_warns_once(workdir, tmp_path, caplog, monkeypatch):
  audio = tmp_path / 'audio'
  os.makedirs(audio)
  w = tokenizer_test.make_waves(1, seed=3, seconds=3.0)[0]
  sf.write(audio / 'long.wav', w, SR)
  d = str(tmp_path / 'index')
  index_cli.run(workdir, str(audio), d, batch_size=4, progress=False)
  sf.write(tmp_path / 'short.wav', w[SR : SR + SR // 2], SR)  # 0.5 s of the 3 s window
  monkeypatch.setattr(index_store, '_warned_short_clip', False)

  def warnings():
    return [r.getMessage() for r in caplog.records if 'without context' in r.getMessage()]

  with caplog.at_level(logging.WARNING, logger='absl'):
    search_cli.run(d, str(tmp_path / 'short.wav'), top_k=1)
    assert len(warnings()) == 1
    message = warnings()[0]
    assert '0.50 s clip' in message and 'zero-padded' in message and '--start/--end' in message
    index = index_store.Index.open(d)
    index.search(w[: SR // 2], 1, sample_rate=SR)  # the Python API: warned already
    assert len(warnings()) == 1
    monkeypatch.setattr(index_store, '_warned_short_clip', False)
    index.search(w[: SR // 2], 1, sample_rate=SR)  # and it warns there too
    assert len(warnings()) == 2
    monkeypatch.setattr(index_store, '_warned_short_clip', False)
    # Not for a region given with its context, nor for a clip of most of a window.
    search_cli.run(d, str(audio / 'long.wav'), start=1.0, end=1.5, top_k=1)
    index.search(w, 1, sample_rate=SR, start=1.0, end=1.5)
    index.search(w[: 2 * SR], 1, sample_rate=SR)
    assert len(warnings()) == 2
  fv = flags.FlagValues()
  search_cli._define_flags(fv)
  assert '--start/--end' in fv['query'].help  # the CLI help says how to give context
