"""BuildKit cacheconfig.v0: byte-identical round trip of BuildKit's own output and order-independence."""

import random

import pytest

from helpers.reference import REFERENCE_DIR
from lamina.oci import CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, FormatError, digest_of, normalize

REF = REFERENCE_DIR


@pytest.mark.parametrize(
    "name", ["cacheconfig.raw.json", "multistage-max.cacheconfig.json", "multistage-min.cacheconfig.json"]
)
def test_buildkit_bytes_round_trip_exactly(name: str) -> None:
    data = (REF / name).read_bytes().strip()
    config = CacheConfig.parse(data)
    if name == "cacheconfig.raw.json":
        assert config.to_bytes() == data
    assert normalize(config).to_bytes() == normalize(CacheConfig.parse(config.to_bytes())).to_bytes()


def test_normalize_reproduces_buildkit_order() -> None:
    data = (REF / "cacheconfig.raw.json").read_bytes().strip()
    assert normalize(CacheConfig.parse(data)).to_bytes() == data


def shuffled(config: CacheConfig, seed: int) -> CacheConfig:
    """The same graph with layers and records in another order and every index rewritten."""
    rng = random.Random(seed)
    lorder = list(range(len(config.layers)))
    rorder = list(range(len(config.records)))
    rng.shuffle(lorder)
    rng.shuffle(rorder)
    lnew = {old: new for new, old in enumerate(lorder)}
    rnew = {old: new for new, old in enumerate(rorder)}
    layers = tuple(
        CacheLayer(config.layers[o].blob, lnew[config.layers[o].parent] if config.layers[o].parent >= 0 else -1)
        for o in lorder
    )
    records = tuple(
        CacheRecord(
            config.records[o].digest,
            tuple(CacheResult(lnew[r.layer], r.created_at) for r in config.records[o].results),
            tuple(tuple(CacheInput(rnew[i.link], i.selector) for i in g) for g in config.records[o].inputs),
        )
        for o in rorder
    )
    return CacheConfig(layers, records)


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_input_gives_the_same_digest(seed: int) -> None:
    config = CacheConfig.parse((REF / "cacheconfig.raw.json").read_bytes())
    expected = digest_of(normalize(config).to_bytes())
    assert digest_of(normalize(shuffled(config, seed)).to_bytes()) == expected


def test_layer_chain_follows_parents() -> None:
    config = CacheConfig.parse((REF / "cacheconfig.raw.json").read_bytes())
    chain = config.layer_chain(0)
    assert chain[-1] == config.layers[0].blob
    assert len(chain) == len(set(chain)) >= 2


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"layers": [{"blob": "sha256:zz"}]}',
        b'{"layers": [{"blob": "sha256:' + b"a" * 64 + b'", "parent": 5}]}',
        b'{"layers": [], "records": [{"digest": "sha256:' + b"a" * 64 + b'", "layers": [{"layer": 0}]}]}',
        b'{"layers": [], "records": [{"digest": "sha256:' + b"a" * 64 + b'", "inputs": [[{"link": 3}]]}]}',
    ],
)
def test_corrupt_configs_are_refused(body: bytes) -> None:
    with pytest.raises(FormatError):
        CacheConfig.parse(body)
