"""The packed store layout: only covered positions on disk, read back as dense (B, G, D) in any order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ccfm.errors import CCFMError
from ccfm.latent import store as store_module
from ccfm.latent.source import stored_rows
from ccfm.latent.statistics import FrozenStats, RunningMoments
from ccfm.latent.store import LatentStore, StoreLayout, chunk_rows, packed_rows

N, G, D, SHARD = 23, 40, 8, 5
CHUNK = 16  # rows per chunk here, so that cells straddle chunks and shards hold several


def _layout(covered: np.ndarray) -> StoreLayout:
    n = covered.shape[0]
    return StoreLayout(
        obs_names=np.array([f"c{i}" for i in range(n)], dtype=object),
        cell_labels=np.array(["ctrl"] * n, dtype=object),
        cell_hashes=np.zeros(n, dtype=np.uint64),
        genes=np.array([f"g{j}" for j in range(G)], dtype=object),
        vocab_ids=np.arange(G),
        covered_counts=covered.sum(axis=1),
        d_model=D,
        shard_cells=SHARD,
    )


@pytest.fixture(autouse=True, scope="module")
def small_chunks() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "CHUNK_BYTES", CHUNK * D * 2)
        yield


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[LatentStore, np.ndarray, np.ndarray]:
    """A store with every shard written from a dense reference (B, G, D) fp16; cell 7 covers no gene."""
    assert chunk_rows(D) == CHUNK
    rng = np.random.default_rng(0)
    covered = rng.random((N, G)) < 0.3
    covered[7] = False
    dense = np.where(covered[..., None], rng.standard_normal((N, G, D)), 0).astype(np.float16)
    store = LatentStore.create(tmp_path_factory.mktemp("store") / "s.zarr", _layout(covered), {})
    for shard in range(store.n_shards):
        start, stop = store.shard_range(shard)
        rows = dense[start:stop][covered[start:stop]]
        store.write_shard(shard, rows, covered[start:stop], RunningMoments.of(rows))
    return LatentStore.open(store.path), dense, covered


def test_packed_rows_follow_each_other_within_a_shard() -> None:
    counts = np.array([3, 0, 2, 5, 1, 4, 4])
    start, per_shard = packed_rows(counts, shard_cells=3, d_model=D)
    assert per_shard == CHUNK  # the fullest shard (10 rows) rounded up to one whole chunk
    np.testing.assert_array_equal(start, [0, 3, 3, CHUNK, CHUNK + 5, CHUNK + 6, 2 * CHUNK])
    assert packed_rows(np.full(4, CHUNK), shard_cells=2, d_model=D)[1] == 2 * CHUNK  # two chunks exactly


def test_read_gives_back_the_dense_features_in_any_order(written: tuple) -> None:
    store, dense, covered = written
    rows = np.array([22, 0, 7, 7, 13, 5, 4, 21])  # across shards, repeated, and one cell with nothing covered
    got = store.read(rows)
    np.testing.assert_array_equal(got.features, dense[rows])
    np.testing.assert_array_equal(got.covered, covered[rows])
    assert store.read(np.array([], dtype=np.int64)).features.shape == (0, G, D)


def test_only_covered_positions_reach_the_disk(written: tuple) -> None:
    store, _, covered = written
    on_disk = sum(f.stat().st_size for f in (store.path / "features" / "c").rglob("*") if f.is_file())
    payload = int(covered.sum()) * D * 2
    chunks = store.features.shape[0] // CHUNK
    slack = store.n_shards * CHUNK * D * 2 + chunks * 20  # one partly filled chunk per shard; index + checksums
    assert payload <= on_disk <= payload + slack
    assert on_disk < 0.5 * N * G * D * 2  # the dense (N, G, D) fp16 would be more than twice this


def test_shard_files_are_the_bytes_zarr_writes(written: tuple, tmp_path: Path) -> None:
    """`write_shard` encodes its files itself; zarr writing the same rows and coverage gives the same files, byte
    for byte (shards of several chunks, the last one padded; a last shard of fewer cells; nothing covered)."""
    store, dense, covered = written
    twin = LatentStore.create(tmp_path / "zarr_wrote.zarr", _layout(covered), {})
    shard_rows, padded = store.features.shards[0], 0
    for shard in range(store.n_shards):
        start, stop = store.shard_range(shard)
        rows = dense[start:stop][covered[start:stop]]
        twin.features[shard * shard_rows : shard * shard_rows + rows.shape[0]] = rows
        twin.covered[start:stop] = covered[start:stop]
        for ours, zarrs in zip(store._shard_files(shard), twin._shard_files(shard), strict=True):
            assert ours.read_bytes() == zarrs.read_bytes()
        padded += rows.shape[0] > CHUNK and rows.shape[0] % CHUNK > 0
    assert padded, "the layout should give a shard of several chunks, the last one partly filled"
    empty = LatentStore.create(tmp_path / "empty.zarr", _layout(np.zeros((SHARD, G), bool)), {})
    empty.write_shard(0, np.zeros((0, D), np.float16), np.zeros((SHARD, G), bool), RunningMoments.empty(D))
    assert not empty._shard_files(0)[0].exists()  # no features file, as zarr leaves an all-fill shard
    assert empty.read(np.arange(SHARD)).features.shape == (SHARD, G, D)


def test_a_shard_that_disagrees_with_the_layout_is_refused(written: tuple, tmp_path: Path) -> None:
    _, dense, covered = written
    store = LatentStore.create(tmp_path / "s.zarr", _layout(covered), {})
    rows = dense[:SHARD][covered[:SHARD]]
    moved = covered[:SHARD].copy()
    moved[0] = np.roll(moved[0], 1) if moved[0].any() else moved[0]
    moved[1] = ~moved[1]  # another number of covered genes than the layout was made for
    longer = covered[:SHARD].copy()
    longer[-1] = True  # the last cell with more rows than its shard has room for
    assert longer.sum() > store.features.shards[0]
    for bad_rows, bad_covered in (
        (rows[:-1], covered[:SHARD]),
        (rows, moved),
        (rows.astype(np.float32), covered[:SHARD]),
        (np.zeros((int(longer.sum()), D), np.float16), longer),
    ):
        with pytest.raises(ValueError, match="disagree with the store's layout"):
            store.write_shard(0, bad_rows, bad_covered, RunningMoments.of(rows))
    assert not store.completed_shards()


def test_stored_rows_round_numpys_normalization_to_fp16_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((5000, D)) * 40).astype(np.float32)
    rows[0, :4] = [7e5, -7e5, 1e-30, 65519.0]  # overflow to ±inf, subnormal, the rounding edge of fp16's largest
    stats = FrozenStats(mean=rng.standard_normal(D), std=rng.random(D) + 0.01, target_std=1.0, n_positions=1)
    with np.errstate(over="ignore"):
        expected = stats.normalize_rows(rows).astype(np.float16)
    np.testing.assert_array_equal(stored_rows(stats, rows).view(np.uint16), expected.view(np.uint16))


def test_moments_on_the_device_are_numpys() -> None:
    """The shard moments extraction computes from the fp16 tensor equal the float64 numpy ones, and merging
    per-shard moments gives those of all rows (what the store's running statistics are)."""
    rng = np.random.default_rng(4)
    rows = (rng.standard_normal((3000, D)) * 3 + 5).astype(np.float16)
    expected = RunningMoments.of(rows)
    got = RunningMoments.of_tensor(torch.from_numpy(rows))
    assert got.count == expected.count
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-12)
    np.testing.assert_allclose(got.m2, expected.m2, rtol=1e-12)
    merged = RunningMoments.of_tensor(torch.from_numpy(rows[:1000])).merge(RunningMoments.of(rows[1000:]))
    np.testing.assert_allclose(merged.m2, expected.m2, rtol=1e-12)
    assert RunningMoments.of_tensor(torch.zeros(0, D, dtype=torch.float16)).count == 0


def test_a_store_of_the_dense_format_is_refused_with_the_command_that_rebuilds_it(tmp_path: Path) -> None:
    covered = np.ones((3, G), dtype=bool)
    store = LatentStore.create(tmp_path / "old.zarr", _layout(covered), {"data": "norman.h5ad", "scgpt": "scGPT"})
    store.root.attrs["format_version"] = 1
    with pytest.raises(CCFMError, match=r"format version 1, this CCFM reads 2 .* rebuild it: `ccfm extract"):
        LatentStore.open(store.path)
