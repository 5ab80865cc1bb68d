"""The feature store's files: Arrow shards any tool reads, the index, compaction, migration of old stores, damage."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from store_files import shard_files, shard_keys

import hacknip.store.features as store_features
from hacknip.features.pooling import STATISTICS
from hacknip.store import DamagedFeaturesError, DamagedShardWarning, FeatureStore, Record
from hacknip.store.index import INDEX_FILE

IDENTITY = {"name": "synthetic", "library": "test", "width": 4}
WIDTH, LAYERS = 4, (0, 1, 2)


def _key(i: int) -> str:
    return f"{i * 7919:032x}"


def _values(i: int, layer: int) -> np.ndarray:
    """Distinct, exactly representable float32 values for record ``i``."""
    return (np.arange(len(STATISTICS) * WIDTH, dtype=np.float32).reshape(len(STATISTICS), WIDTH) + 100 * i
            + 10_000 * layer)


def _records(indices, layers=LAYERS) -> list[Record]:
    return [Record(_key(i), i + 1, {layer: dict(zip(STATISTICS, _values(i, layer))) for layer in layers})
            for i in indices]


def _write(store_root, batches, layers=LAYERS):
    features = FeatureStore(store_root).open(IDENTITY)
    for batch in batches:
        features.write(_records(batch, layers))
    return features


def _assert_reads_back(features, indices, layer=1):
    stats, n_atoms = features.read([_key(i) for i in indices], layer)
    expected = np.array([_values(i, layer) for i in indices])
    for s, statistic in enumerate(STATISTICS):
        np.testing.assert_array_equal(stats[statistic], expected[:, s])
    np.testing.assert_array_equal(n_atoms, np.array(indices) + 1)


def test_a_shard_is_an_arrow_file_that_pyarrow_alone_reads_and_checks(tmp_path):
    features = _write(tmp_path, [range(5)])
    (shard,) = shard_files(features.path)
    table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
    assert table.schema.metadata[b"format"] == b"hacknip-features/1"
    assert table.column_names == ["key", "n_atoms", "L0", "L0_crc32", "L1", "L1_crc32", "L2", "L2_crc32"]
    assert shard_keys(shard) == [_key(i) for i in range(5)]
    block = np.array(table.column("L2").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(block, np.array([_values(i, 2) for i in range(5)]))
    for i in range(5):  # the documented checksum: CRC-32 of key, n_atoms (int64) and the block, little-endian
        data = bytes.fromhex(_key(i)) + np.int64(i + 1).astype("<i8").tobytes() + block[i].astype("<f4").tobytes()
        assert table.column("L2_crc32")[i].as_py() == zlib.crc32(data)


def test_records_of_many_shards_read_back_in_the_order_asked(tmp_path):
    features = _write(tmp_path, [range(0, 4), range(4, 9), range(9, 12)])
    order = [11, 0, 5, 3, 9, 4, 10]
    _assert_reads_back(features, order)
    assert len(features) == 12 and features.stored_layers() == list(LAYERS)
    assert features.missing([_key(1), _key(99), _key(2)], [0, 2]) == [1]
    assert features.missing([_key(1)], [3]) == [0]


def test_a_read_over_more_shards_than_are_kept_open(tmp_path, monkeypatch):
    monkeypatch.setattr(store_features, "OPEN_SHARDS", 2)
    monkeypatch.setattr(store_features, "REINDEX_TAIL_SHARDS", 100)
    features = _write(tmp_path, [range(i, i + 2) for i in range(0, 12, 2)])
    _assert_reads_back(features, [11, 0, 5, 3, 9, 4, 10, 1, 2, 6, 7, 8])
    monkeypatch.setattr("hacknip.store.folder.READ_THREADS", 2)
    many = _write(tmp_path / "many", [range(i, i + 40) for i in range(0, 200, 40)])  # enough runs to read in threads
    _assert_reads_back(many, list(range(199, -1, -3)))


def test_keys_must_be_content_hashes(tmp_path):
    features = FeatureStore(tmp_path).open(IDENTITY)
    with pytest.raises(ValueError, match="32 hex digits"):
        features.write([Record("s1", 1, {0: dict(zip(STATISTICS, _values(0, 0)))})])


def test_the_index_is_written_once_shards_pile_up_and_a_fresh_opening_uses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store_features, "REINDEX_TAIL_SHARDS", 3)
    features = _write(tmp_path, [[i] for i in range(7)])
    index = pa.ipc.open_file(str(features.path / INDEX_FILE)).read_all()
    keys = index.column("key").to_pylist()
    assert len(keys) >= 6 and keys == sorted(keys)  # sorted by key, so that opening searches instead of scanning
    reopened = FeatureStore(tmp_path).open(IDENTITY)
    _assert_reads_back(reopened, [6, 2, 0, 5])
    assert len(reopened) == 7


def test_small_shards_are_merged_without_losing_or_repeating_a_record(tmp_path, monkeypatch):
    monkeypatch.setattr(store_features, "COMPACT_SMALL_SHARDS", 4)
    features = _write(tmp_path, [range(0, 3), range(3, 6), range(2, 8)])  # records 2..5 twice
    assert len(shard_files(features.path)) == 3
    features.write(_records(range(8, 10)))  # the fourth small shard: the writer merges them
    (merged,) = shard_files(features.path)
    assert sorted(shard_keys(merged)) == sorted(_key(i) for i in range(10))
    _assert_reads_back(features, list(range(10))[::-1])
    _assert_reads_back(FeatureStore(tmp_path).open(IDENTITY), [3, 9, 0])


def test_a_reader_reads_on_while_another_process_compacts(tmp_path):
    reader = _write(tmp_path, [range(0, 3), range(3, 6), range(6, 9)])
    compactor = FeatureStore(tmp_path).open(IDENTITY)
    report = compactor.compact()
    assert (report.merged, report.written) == (3, 1) and len(shard_files(reader.path)) == 1
    _assert_reads_back(reader, [8, 1, 4])  # its shards were removed under it: it looks again


def test_store_compact_command_merges_each_backbones_shards(tmp_path):
    from hacknip.cli import cli

    _write(tmp_path, [range(0, 2), range(2, 4)])
    result = CliRunner().invoke(cli, ["store", "compact", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 shards -> 1 (2 merged into 1, 4 structures" in result.output


def test_a_store_of_npz_shards_is_migrated_when_opened(tmp_path):
    folder = FeatureStore(tmp_path).open(IDENTITY).path
    for name, indices in (("shard-1-1-0.npz", range(0, 3)), ("shard-2-1-1.npz", range(3, 5))):
        arrays = {"key": np.array([_key(i) for i in indices]), "n_atoms": np.array([i + 1 for i in indices]),
                  "layers": np.array(LAYERS)}
        for layer in LAYERS:
            for s, statistic in enumerate(STATISTICS):
                arrays[f"L{layer}_{statistic}"] = np.array([_values(i, layer)[s] for i in indices])
        np.savez(folder / name, **arrays)
    (folder / "shard-3-1-2.npz").write_bytes(b"\0" * 200)
    with pytest.warns(DamagedShardWarning, match=r"shard-3-1-2.npz: damaged feature-store shard"):
        features = FeatureStore(tmp_path).open(IDENTITY)
    assert not list(folder.glob("*.npz")) and [p.name for p in shard_files(folder)] == ["shard-1-1-0.arrow",
                                                                                         "shard-2-1-1.arrow"]
    _assert_reads_back(features, [4, 0, 2])
    assert (folder / "damaged" / "shard-3-1-2.npz").exists()


def test_a_damaged_index_is_rebuilt_from_the_shards(tmp_path):
    features = _write(tmp_path, [range(0, 3), range(3, 6)])
    assert features.reindex()
    (features.path / INDEX_FILE).write_bytes(b"not an index" * 10)
    with pytest.warns(DamagedShardWarning, match=r"index.arrow: unreadable feature-store index"):
        reopened = FeatureStore(tmp_path).open(IDENTITY)
    _assert_reads_back(reopened, [5, 0, 3])


def test_an_index_pointing_at_the_wrong_rows_is_caught_and_rebuilt(tmp_path):
    from hacknip.store.index import read_index, write_index

    features = _write(tmp_path, [range(0, 4)])
    assert features.reindex()
    index, shards = read_index(features.folder)
    index.row = index.row[::-1].copy()  # every key now points at another record
    write_index(features.folder, index, shards)
    _assert_reads_back(FeatureStore(tmp_path).open(IDENTITY), [0, 1, 2, 3])


def test_a_flipped_bit_found_while_reading_sets_the_shard_aside_and_says_run_again(tmp_path):
    features = _write(tmp_path, [range(0, 3), range(3, 6)])
    shard = shard_files(features.path)[1]
    reader = FeatureStore(tmp_path).open(IDENTITY)
    data = bytearray(shard.read_bytes())
    table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
    first = np.array(table.column("L1").to_pylist()[1], np.float32).tobytes()
    at = bytes(data).index(first)  # inside record 4's layer-1 block, as a failing disk would
    data[at + 5] ^= 0x04
    shard.write_bytes(bytes(data))
    with pytest.warns(DamagedShardWarning), pytest.raises(DamagedFeaturesError, match=rf"{shard.name}: damaged "
                                                          r"feature-store shard .*Run the same command again"):
        reader.read([_key(i) for i in range(6)], 1)
    assert (features.path / "damaged" / shard.name).exists()
    assert reader.missing([_key(i) for i in range(6)], [1]) == [3, 4, 5]


def test_a_reader_that_may_not_write_the_index_reads_the_shards_after_it(tmp_path, monkeypatch):
    _write(tmp_path, [range(0, 3), range(3, 6), range(6, 9)])
    monkeypatch.setattr(store_features, "REINDEX_TAIL_SHARDS", 2)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "index.arrow")

    monkeypatch.setattr(store_features, "write_index", refused)
    reader = FeatureStore(tmp_path).open(IDENTITY)
    assert not (reader.path / INDEX_FILE).exists()
    _assert_reads_back(reader, [8, 0, 4])
