"""A feature store on object storage, through fsspec: its in-memory file system stands in for S3 (same calls:
ls, info, ranged reads, whole-object puts; no renames, no locks)."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest
from click.testing import CliRunner
from test_store import _dataset
from test_store_format import IDENTITY, _assert_reads_back, _key, _records, _write
from toy_backbone import ToyBackbone

from hacknip.errors import InputError
from hacknip.features.featurize import featurize, layer_matrix
from hacknip.store import DamagedFeaturesError, DamagedShardWarning, FeatureStore
from hacknip.store.index import INDEX_FILE


@pytest.fixture
def url():
    root = f"memory://hacknip-test-{uuid.uuid4().hex[:8]}"
    yield root
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def _fs():
    return fsspec.filesystem("memory")


def _shards(features) -> list[str]:
    return sorted(name for name in features.folder.files() if name.startswith("shard-"))


def test_featurising_into_object_storage_gives_the_local_features(url, tmp_path):
    dataset = _dataset(12)
    remote = featurize(dataset, ToyBackbone(), FeatureStore(url), batch_size=4)
    local = featurize(dataset, ToyBackbone(), FeatureStore(tmp_path), batch_size=4)
    assert remote.computed == 12 and isinstance(remote.features.path, str) and remote.features.path.startswith(url)
    assert remote.keys == local.keys
    for layers in ([0], [0, 1]):
        np.testing.assert_array_equal(layer_matrix(remote.features, remote.keys, layers, ("mean", "max")),
                                      layer_matrix(local.features, local.keys, layers, ("mean", "max")))
    again = featurize(dataset, ToyBackbone(), FeatureStore(url), batch_size=4)
    assert again.computed == 0 and again.reused == 12  # another machine finds them there


def test_reads_from_object_storage_fetch_only_the_rows_asked_for(url, monkeypatch):
    features = _write(url, [range(0, 200)])
    assert features.reindex()
    (shard,) = _shards(features)
    size = _fs().info(f"{url.removeprefix('memory://')}/{features.folder.name}/{shard}")["size"]
    fetched = []
    original = type(_fs()).cat_ranges

    def counting(self, paths, starts, ends, **kwargs):
        fetched.extend(end - start for start, end in zip(starts, ends))
        return original(self, paths, starts, ends, **kwargs)

    monkeypatch.setattr(type(_fs()), "cat_ranges", counting)
    reopened = FeatureStore(url).open(IDENTITY)
    _assert_reads_back(reopened, [150, 3, 77])
    row = 3 * 4 * 4
    assert sum(fetched) == 3 * row + 200 * 4 < size / 30  # the three rows and the layer's CRC column, nothing else


def test_a_remote_store_is_indexed_and_compacted_by_hand_not_by_every_writer(url, monkeypatch):
    monkeypatch.setattr("hacknip.store.features.COMPACT_SMALL_SHARDS", 3)
    monkeypatch.setattr("hacknip.store.features.REINDEX_TAIL_SHARDS", 2)
    features = _write(url, [range(0, 3), range(3, 6), range(6, 9), range(9, 12)])
    assert len(_shards(features)) == 4  # no lock on object storage: writers leave merging to one process
    assert features.folder.stamp(INDEX_FILE) is not None  # the tail grew past 2: indexed
    report = features.compact()
    assert (report.merged, report.written) == (4, 1) and len(_shards(features)) == 1
    reopened = FeatureStore(url).open(IDENTITY)
    assert len(reopened) == 12 and reopened.shard_count == 1
    _assert_reads_back(reopened, [11, 0, 5, 6])


def test_a_flipped_bit_on_object_storage_is_set_aside_there(url):
    features = _write(url, [range(0, 3), range(3, 6)])
    name = _shards(features)[1]
    path = f"{url.removeprefix('memory://')}/{features.folder.name}/{name}"
    data = bytearray(_fs().cat_file(path))
    at = features._shards[features._ids[name]].layout.batches[0]["blocks"][1] + 5
    data[at] ^= 0x10
    _fs().pipe_file(path, bytes(data))
    reader = FeatureStore(url).open(IDENTITY)
    with pytest.warns(DamagedShardWarning), pytest.raises(DamagedFeaturesError, match="run|Run the same command"):
        reader.read([_key(i) for i in range(6)], 1)
    assert not _fs().exists(path) and _fs().exists(f"{path.rsplit('/', 1)[0]}/damaged/{name}")
    assert FeatureStore(url).open(IDENTITY).missing([_key(i) for i in range(6)], [1]) == [3, 4, 5]


def test_the_cli_takes_a_store_url(url):
    from hacknip.cli import cli

    _write(url, [range(0, 3), range(3, 6)])
    result = CliRunner().invoke(cli, ["store", "check", "--store", url])
    assert result.exit_code == 0, result.output
    assert "2 shards readable" in result.output
    result = CliRunner().invoke(cli, ["store", "compact", "--store", url])
    assert result.exit_code == 0 and "2 shards -> 1" in result.output, result.output


def test_an_unknown_file_system_is_one_line_saying_what_to_install():
    with pytest.raises(InputError, match="nosuchfs://bucket/x"):
        FeatureStore("nosuchfs://bucket/x")


def test_records_written_remotely_read_back_whole(url):
    features = _write(url, [range(0, 5)])
    assert features.missing([_key(i) for i in range(7)], [0, 1, 2]) == [5, 6]
    features.write(_records(range(5, 7)))
    _assert_reads_back(FeatureStore(url).open(IDENTITY), list(range(7)), layer=2)
