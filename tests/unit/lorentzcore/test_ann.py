import hashlib
import json
import threading

import hnswlib
import numpy as np
import pytest
from lorentzcore_data import clustered_vectors, queries_near

from lorentzcore.ann import (
    AnnArtifactError,
    AnnIndex,
    exact_search,
    recall_at_k,
    recall_lower_bound,
    recall_per_query,
)

DIM = 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X, centres = clustered_vectors(3000, DIM, 30, rng)
    Q = queries_near(centres, 200, rng)
    return X, Q, centres


@pytest.fixture
def index(data, tmp_path_factory) -> AnnIndex:
    X, _, _ = data
    directory = tmp_path_factory.mktemp("ann")
    return AnnIndex.build(X, directory=directory, M=16, ef_construction=100, k_cand=32, seed=11)


@pytest.fixture
def weak_index(data) -> AnnIndex:
    """A deliberately sparse graph where ef matters a lot (clusters barely connected)."""
    X, _, _ = data
    return AnnIndex.build(X, M=4, ef_construction=10, ef_search=10, k_cand=10, seed=3)


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_get_vectors_are_byte_identical_to_the_training_vectors(index, data):
    X, _, _ = data
    ids = np.random.default_rng(1).integers(0, len(X), size=(7, 40))
    got = index.get_vectors(ids)
    assert got.shape == (7, 40, DIM) and got.dtype == np.float32
    assert sha256(got) == sha256(X[ids])


def test_get_vectors_reads_the_read_only_memmap_not_the_training_array(tmp_path):
    X, _ = clustered_vectors(500, DIM, 5, np.random.default_rng(2))
    original = X.copy()
    ann = AnnIndex.build(X, directory=tmp_path, M=8, ef_construction=50, k_cand=16)
    store = ann.vector_store
    assert isinstance(store, np.memmap)
    assert store.mode == "r" and not store.flags.writeable
    assert ann.vectors_path == tmp_path / "vectors.npy"
    assert np.shares_memory(ann._store_view, store)  # the gather view maps the same file

    X[:] = -1.0  # the caller's array is gone as far as the index is concerned
    ids = np.arange(0, 500, 7)
    assert sha256(ann.get_vectors(ids)) == sha256(original[ids])
    _, _, Z = ann.search_with_vectors(original[:3], 16)
    assert (Z != -1.0).all()


def test_vectors_are_stored_as_float32_even_from_float64_input(tmp_path):
    X64 = np.random.default_rng(3).standard_normal((300, DIM))
    ann = AnnIndex.build(X64, directory=tmp_path, M=8, ef_construction=50, k_cand=8)
    on_disk = np.load(tmp_path / "vectors.npy", allow_pickle=False)
    assert on_disk.dtype == np.float32 and ann.vector_store.dtype == np.float32
    assert np.array_equal(on_disk, X64.astype(np.float32))


def test_self_query_recall_is_one(index, data):
    X, _, _ = data
    sample = X[::15]
    ids, dists = index.search(sample, 10)
    exact_ids, _ = index.exact_search(sample, 10)
    assert recall_at_k(ids, exact_ids) >= 0.999
    assert np.array_equal(ids[:, 0], np.arange(0, len(X), 15))
    np.testing.assert_allclose(dists[:, 0], 0.0, atol=1e-5)


def test_search_with_vectors_returns_consistent_ids_distances_and_vectors(index, data):
    _, Q, _ = data
    ids, dists, Z = index.search_with_vectors(Q[:20], 32)
    assert ids.dtype == np.int64 and ids.shape == (20, 32)
    assert dists.shape == (20, 32) and Z.shape == (20, 32, DIM) and Z.dtype == np.float32
    assert np.array_equal(Z, index.get_vectors(ids))
    squared_l2 = ((Z.astype(np.float64) - Q[:20, None, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(dists, squared_l2, rtol=1e-4, atol=1e-4)  # hnswlib: squared L2
    assert (np.diff(dists, axis=1) >= 0).all()
    assert all(len(set(row)) == 32 for row in ids.tolist())


def test_search_with_vectors_defaults_to_k_cand_and_accepts_one_vector(index, data):
    _, Q, _ = data
    ids, _, Z = index.search_with_vectors(Q[0])
    assert ids.shape == (1, index.k_cand) and Z.shape == (1, index.k_cand, DIM)
    np.testing.assert_array_equal(ids, index.search(Q[0].astype(np.float64), index.k_cand)[0])


def test_exact_search_matches_full_sort(index, data):
    X, Q, _ = data
    ids, dists = exact_search(index.vector_store, Q[:25], 12)
    full = ((Q[:25, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(ids, np.argsort(full, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(dists, np.sort(full, axis=1)[:, :12], rtol=1e-9, atol=1e-9)


def test_recall_at_k_counts_true_neighbours_found_in_candidates():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 1, 0, 11], [5, 60, 70, 80, 90, 100]])
    assert recall_at_k(approx, exact) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValueError, match="same number"):
        recall_at_k(approx[:1], exact)


def test_recall_lower_bound_subtracts_standard_errors_of_the_per_query_mean():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    approx = np.array([[1, 2, 3, 4], [5, 6, 0, 0], [9, 10, 11, 0]])
    per_query = recall_per_query(approx, exact)
    np.testing.assert_array_equal(per_query, [1.0, 0.5, 0.75])
    se = np.std(per_query, ddof=1) / np.sqrt(3)
    assert recall_lower_bound(approx, exact) == pytest.approx(0.75 - 2 * se)
    assert recall_lower_bound(approx, exact, z=1.0) == pytest.approx(0.75 - se)
    assert recall_lower_bound(exact, exact) == 1.0  # no spread, no penalty
    assert recall_lower_bound(approx[:1], exact[:1]) == 1.0  # one query: the mean


def test_threaded_batch_answers_every_query_as_it_would_alone(index, data):
    _, Q, _ = data
    alone = np.concatenate([index.search_with_vectors(q)[0] for q in Q[:60]])
    index.num_threads = 2
    ids, _dists, Z = index.search_with_vectors(Q[:60])
    np.testing.assert_array_equal(ids, alone)
    np.testing.assert_array_equal(Z, index.get_vectors(ids))
    index.num_threads = -1
    np.testing.assert_array_equal(index.search_with_vectors(Q[:60])[0], alone)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="num_threads"):
            index.num_threads = bad


def test_ef_and_recall_survive_save_and_load(index, data, tmp_path):
    _, Q, _ = data
    index.set_ef(23)
    index.set_k_cand(17)
    before_ids, before_d = index.search(Q, 10)
    exact_ids, _ = index.exact_search(Q, 10)
    before_recall = recall_at_k(before_ids, exact_ids)

    loaded = AnnIndex.load(index.save(tmp_path / "fold_3"))
    assert loaded.ef_search == 23 and loaded.k_cand == 17
    assert (loaded.M, loaded.ef_construction, loaded.count) == (16, 100, 3000)
    after_ids, after_d = loaded.search(Q, 10)
    assert recall_at_k(after_ids, exact_ids) == before_recall
    assert np.array_equal(after_ids, before_ids) and np.array_equal(after_d, before_d)
    meta = json.loads((tmp_path / "fold_3" / "ann_meta.json").read_text())
    assert meta["ef_search"] == 23 and meta["format_version"] == 1


def test_raw_hnswlib_forgets_ef_on_reload_which_load_corrects(weak_index, data, tmp_path):
    """The trap being guarded: save_index does not persist ef (it comes back as 10)."""
    _, Q, _ = data
    weak_index.set_ef(300)
    weak_index.save(tmp_path)
    raw = hnswlib.Index(space="l2", dim=DIM)
    raw.load_index(str(tmp_path / "index.bin"))
    assert raw.ef == 10
    loaded = AnnIndex.load(tmp_path)
    assert loaded.ef_search == 300 and loaded._index.ef == 300
    exact_ids, _ = loaded.exact_search(Q, 10)
    raw_recall = recall_at_k(raw.knn_query(Q, k=10)[0], exact_ids)
    assert recall_at_k(loaded.search(Q, 10)[0], exact_ids) > raw_recall


def test_save_into_the_build_directory_keeps_the_mapped_store(tmp_path, data):
    X, Q, _ = data
    ann = AnnIndex.build(X[:400], directory=tmp_path, M=8, ef_construction=40, k_cand=8)
    ann.save(tmp_path)
    loaded = AnnIndex.load(tmp_path)
    assert np.array_equal(loaded.search(Q, 5)[0], ann.search(Q, 5)[0])
    assert sha256(ann.get_vectors(np.arange(400))) == sha256(X[:400])


@pytest.mark.parametrize("name", ["index.bin", "vectors.npy"])
def test_corrupted_file_is_refused_naming_it(index, tmp_path, name):
    index.save(tmp_path)
    path = tmp_path / name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(AnnArtifactError, match=name) as info:
        AnnIndex.load(tmp_path)
    assert info.value.path == path
    assert "sha256" in str(info.value)


def test_missing_or_foreign_artifacts_are_refused(index, tmp_path):
    with pytest.raises(AnnArtifactError, match=r"ann_meta\.json: missing"):
        AnnIndex.load(tmp_path)
    index.save(tmp_path)
    meta_path = tmp_path / "ann_meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(AnnArtifactError, match="format_version 2"):
        AnnIndex.load(tmp_path)
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "vectors.npy").unlink()
    with pytest.raises(AnnArtifactError, match=r"vectors\.npy: missing"):
        AnnIndex.load(tmp_path)
    meta_path.write_text("{not json")
    with pytest.raises(AnnArtifactError, match="unreadable"):
        AnnIndex.load(tmp_path)


def test_ef_below_k_is_raised_to_k_inside_search(weak_index, data):
    _, Q, _ = data
    weak_index.set_ef(1)
    low_ids, _ = weak_index.search(Q, 50)
    weak_index.set_ef(50)
    assert np.array_equal(low_ids, weak_index.search(Q, 50)[0])
    assert weak_index.ef_search == 50


def test_graph_that_cannot_return_k_results_falls_back_to_exact_search(tmp_path):
    """A 30-point M=2 graph makes knn_query raise "contiguous 2D array" for k=30."""
    X = np.random.default_rng(5).standard_normal((30, DIM)).astype(np.float32)
    ann = AnnIndex.build(X, directory=tmp_path, M=2, ef_construction=2, ef_search=1, k_cand=30)
    with pytest.raises(RuntimeError, match="contiguous 2D array"):
        ann._index.knn_query(X[:1], k=30)
    ids, dists = ann.search(X[:2], 30)
    exact_ids, exact_d = ann.exact_search(X[:2], 30)
    assert np.array_equal(ids, exact_ids)
    np.testing.assert_allclose(dists, exact_d, rtol=1e-6, atol=1e-6)
    assert ann.fallback_count == 1
    assert ann.ef_search == 1 and ann._index.ef == 1  # the temporary wide beam was undone


@pytest.mark.parametrize(
    ("queries", "k", "error", "message"),
    [
        (np.zeros((2, DIM)), 3001, ValueError, r"k must be in \[1, 3000\]"),
        (np.zeros((2, DIM)), 0, ValueError, "k must be"),
        (np.zeros((2, DIM + 1)), 5, ValueError, "d=16"),
        (np.full((1, DIM), np.nan), 5, ValueError, "NaN"),
    ],
)
def test_bad_queries_are_refused(index, queries, k, error, message):
    with pytest.raises(error, match=message):
        index.search(queries, k)


def test_bad_parameters_and_ids_are_refused(index):
    with pytest.raises(ValueError, match="ef_search must be >= 1"):
        index.set_ef(0)
    with pytest.raises(ValueError, match="K_cand must be"):
        index.search_with_vectors(np.zeros(DIM), 5000)
    with pytest.raises(IndexError, match="ids must be in"):
        index.get_vectors(np.array([0, 3000]))
    with pytest.raises(ValueError, match="integers"):
        index.get_vectors(np.array([0.5]))
    with pytest.raises(ValueError, match="NaN or inf"):
        AnnIndex.build(np.full((3, DIM), np.inf))


def test_set_ef_never_changes_ef_under_an_in_flight_query(weak_index, data):
    """Each batch must equal the single-threaded answer for one ef, never a mix of two.

    hnswlib reads ef per query row while the GIL is released, so without the lock a flip in
    the middle of a batch yields rows searched with different ef (checked: ~80% of batches
    are mixed when the lock is disabled).
    """
    _, Q, _ = data
    Q = np.vstack([Q, Q])  # longer batches widen the race window
    efs = (10, 400)
    reference = {}
    for ef in efs:
        weak_index.set_ef(ef)
        reference[ef] = weak_index.search(Q, 10)
    assert (reference[10][0] != reference[400][0]).any(axis=1).sum() > 50

    stop = threading.Event()
    outcomes: list[int | None] = []
    errors: list[BaseException] = []
    flips = 0

    def search_batches() -> None:
        try:
            for _ in range(25):
                ids, dists = weak_index.search(Q, 10)
                match = [
                    ef
                    for ef, (ref_ids, ref_d) in reference.items()
                    if np.array_equal(ids, ref_ids) and np.array_equal(dists, ref_d)
                ]
                outcomes.append(match[0] if match else None)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def flip_ef() -> None:
        nonlocal flips
        while not stop.is_set():
            weak_index.set_ef(efs[flips % 2])
            flips += 1

    searchers = [threading.Thread(target=search_batches) for _ in range(2)]
    flipper = threading.Thread(target=flip_ef)
    flipper.start()
    for t in searchers:
        t.start()
    for t in searchers:
        t.join()
    stop.set()
    flipper.join()

    assert not errors
    assert len(outcomes) == 50
    assert None not in outcomes, f"{outcomes.count(None)} batches mixed two ef values"
    assert flips > 50
