"""Candidate search: an hnswlib HNSW index over whitened vectors plus a memory-mapped store.

The index only answers "which rows are near"; the neighbour vectors themselves are read
from ``vectors.npy`` opened with ``np.load(mmap_mode="r")``, so the scorer never keeps (or
accidentally mutates) the training matrix, and index and store ship together as one
checksummed artifact directory::

    index.bin      hnswlib graph (labels are row numbers of vectors.npy)
    vectors.npy    float32 (count, dim), row i is the vector labelled i
    ann_meta.json  format version, shape, build/search parameters, sha256 of both files

hnswlib traps handled here:

* ``save_index`` does not persist ``ef``; a loaded index searches with ef=10. ``ef_search``
  is stored in the meta and restored by :meth:`AnnIndex.load`.
* ``set_ef`` writes a field that concurrent ``knn_query`` calls read while they run (the
  GIL is released), so a query batch could mix two ef values. Queries hold a shared lock
  and :meth:`AnnIndex.set_ef` an exclusive one (writer-preferring readers-writer lock).
* ``knn_query`` needs ``k <= count`` and raises "Cannot return the results in a contiguous
  2D array. Probably ef or M is too small" when the graph yields fewer than k points.
  hnswlib 0.8 already searches with ``max(ef, k)``; on that error the batch is retried
  once with a larger ef and, if the graph still cannot produce k points (disconnected
  layer 0), answered by exact search and counted in ``fallback_count``.
* Distances are *squared* Euclidean (hnswlib's ``"l2"`` space); :meth:`exact_search`
  returns the same quantity so the two are comparable.

Exact candidate stage (``metric="lorentz_mips"``). Lorentz nearest neighbours are a
maximum inner product search: with u = (sqrt(1 + |s z|^2), s z) on the hyperboloid,
-cosh d_L(q, i) = <u_q, u_i>_L = (-u_q0, s z_q) . (u_i0, s z_i), so the query
q' = (-u_q0, s z_q) ranks stored points p_i = (u_i0, s z_i) by a plain dot product. The
usual MIPS-to-L2 reduction appends sqrt(Phi^2 - |p_i|^2) to every stored point (Phi^2 =
max |p_i|^2) and 0 to the query: |q' - p~_i|^2 = |q'|^2 + Phi^2 + 2 cosh d_L(q, i), a
monotone function of d_L, so the same hnswlib L2 index returns Lorentz neighbours directly
(no L2-order candidates that the re-rank must rescue). The augmented vectors live only in
the graph; ``vectors.npy`` still holds the whitened z for the re-rank, and distances
returned by searches are the augmented squared L2. float32 resolves cosh d_L to about
eps32 * (|q'|^2 + Phi^2): see tests/unit/lorentzcore/test_ann_mips.py for the mpmath check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hnswlib
import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ANN_FORMAT_VERSION",
    "METRICS",
    "AnnArtifactError",
    "AnnIndex",
    "exact_search",
    "mips_augment_points",
    "mips_augment_queries",
    "recall_at_k",
    "recall_lower_bound",
    "recall_per_query",
]

#: Candidate metrics: plain squared L2 on z, or Lorentz distance via MIPS augmentation.
METRICS = ("l2", "lorentz_mips")


def _lift_parts(
    Z: NDArray[np.floating], scale: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    sz = np.asarray(Z, dtype=np.float64) * scale
    return np.sqrt(1.0 + np.einsum("ij,ij->i", sz, sz)), sz


def mips_augment_points(
    Z: NDArray[np.floating], scale: float, phi2: float | None = None
) -> tuple[NDArray[np.float32], float]:
    """Stored rows (u0, s z, sqrt(Phi^2 - |p|^2)) in float32, and Phi^2 (computed if None).

    Built in float64; |p|^2 = u0^2 + |s z|^2 = 1 + 2 |s z|^2, so the last column is
    sqrt(2 (max |s z|^2 - |s z|^2)) exactly, without the cancellation of Phi^2 - |p|^2.
    """
    u0, sz = _lift_parts(Z, scale)
    r2 = np.einsum("ij,ij->i", sz, sz)
    r2_max = float(r2.max()) if phi2 is None else (phi2 - 1.0) / 2.0
    extra = np.sqrt(np.maximum(2.0 * (r2_max - r2), 0.0))
    out = np.column_stack([u0, sz, extra]).astype(np.float32)
    return out, 1.0 + 2.0 * r2_max


@numba.njit(cache=True, nogil=True)
def _njit_augment_queries(Zq: NDArray[np.floating], scale: float, out: NDArray[np.float32]) -> None:
    """out[i] = (-u0, s z, 0) of Zq[i], in float64 and rounded once to float32."""
    d = Zq.shape[1]
    for i in range(Zq.shape[0]):
        r2 = 0.0
        for j in range(d):
            v = np.float64(Zq[i, j]) * scale
            r2 += v * v
            out[i, j + 1] = v
        out[i, 0] = -np.sqrt(1.0 + r2)
        out[i, d + 1] = 0.0


def mips_augment_queries(Zq: NDArray[np.floating], scale: float) -> NDArray[np.float32]:
    """Query rows (-u0, s z, 0) in float32.

    Compiled: on the single-event path the numpy version (float64 copies, einsum, a column
    stack) cost ~5 us per query, as much as the rest of the wrapper around knn_query.
    """
    q = np.ascontiguousarray(Zq)
    if q.dtype != np.float32:
        q = q.astype(np.float64)
    out = np.empty((q.shape[0], q.shape[1] + 2), dtype=np.float32)
    _njit_augment_queries(q, float(scale), out)
    return out


ANN_FORMAT_VERSION = 1
INDEX_FILE = "index.bin"
VECTORS_FILE = "vectors.npy"
META_FILE = "ann_meta.json"
_CONTIGUOUS_ERROR = "contiguous 2D array"
# Exact search works through the store in blocks of about this many distances.
_EXACT_BLOCK = 1 << 22


class AnnArtifactError(RuntimeError):
    """An index artifact is missing, corrupted, or from another format version."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


class _ReadWriteLock:
    """Many concurrent readers or one writer; a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        # Plain methods rather than a context manager: this sits on the per-query hot path.
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _as_queries(Zq: ArrayLike, dim: int) -> NDArray[np.float32]:
    """(d,) or (n, d) -> C-contiguous float32 (n, d); hnswlib would convert anyway."""
    q = np.asarray(Zq)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (d,) or (n, d) with d={dim}; got {q.shape}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or inf (or overflow float32)")
    return q


def _check_k(k: int, count: int, name: str = "k") -> int:
    k = int(k)
    if not 1 <= k <= count:
        raise ValueError(f"{name} must be in [1, {count}] (the number of indexed vectors); got {k}")
    return k


def exact_search(
    store: NDArray[np.floating], Zq: ArrayLike, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Brute-force top-k by squared L2 over ``store`` (rows are ids), in float64 blocks.

    Ties are broken by the smaller id, so the answer is deterministic.
    """
    n_store, dim = store.shape
    k = _check_k(k, n_store)
    Q = np.asarray(Zq, dtype=np.float64)
    if Q.ndim == 1:
        Q = Q[None, :]
    if Q.ndim != 2 or Q.shape[1] != dim:
        raise ValueError(f"queries must have shape (d,) or (n, d) with d={dim}; got {Q.shape}")
    nq = Q.shape[0]
    best_d = np.full((nq, k), np.inf)
    best_i = np.zeros((nq, k), dtype=np.int64)
    q_norm = np.einsum("ij,ij->i", Q, Q)
    rows = max(1, _EXACT_BLOCK // max(nq, 1))
    for start in range(0, n_store, rows):
        X = np.asarray(store[start : start + rows], dtype=np.float64)
        D = q_norm[:, None] - 2.0 * (Q @ X.T) + np.einsum("ij,ij->i", X, X)[None, :]
        np.maximum(D, 0.0, out=D)
        ids = np.broadcast_to(np.arange(start, start + X.shape[0]), D.shape)
        cand_d = np.concatenate([best_d, D], axis=1)
        cand_i = np.concatenate([best_i, ids], axis=1)
        if cand_d.shape[1] > k:
            part = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
            cand_d = np.take_along_axis(cand_d, part, axis=1)
            cand_i = np.take_along_axis(cand_i, part, axis=1)
        best_d, best_i = cand_d, cand_i
    order = np.lexsort((best_i, best_d), axis=1)
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_d, order, axis=1)


def recall_per_query(approx_ids: ArrayLike, exact_ids: ArrayLike) -> NDArray[np.float64]:
    """Each row's fraction of its exact top-k found among its approximate ids.

    ``approx_ids`` may be wider than ``exact_ids`` (K_cand candidates vs the true top-k):
    that is the recall of the candidate stage.
    """
    a = np.asarray(approx_ids, dtype=np.int64)
    e = np.asarray(exact_ids, dtype=np.int64)
    if a.ndim == 1:
        a = a[None, :]
    if e.ndim == 1:
        e = e[None, :]
    if a.shape[0] != e.shape[0] or e.shape[1] == 0:
        raise ValueError(f"need the same number of non-empty rows; got {a.shape} and {e.shape}")
    # Offset each row into its own id range so one vectorised isin answers all rows.
    span = int(max(a.max(initial=0), e.max(initial=0))) + 1
    offset = np.arange(a.shape[0], dtype=np.int64)[:, None] * span
    hits: NDArray[np.bool_] = np.isin(e + offset, a + offset)
    out: NDArray[np.float64] = hits.mean(axis=1)
    return out


def recall_at_k(approx_ids: ArrayLike, exact_ids: ArrayLike) -> float:
    """Mean fraction of each row's exact top-k found among its approximate ids."""
    return float(recall_per_query(approx_ids, exact_ids).mean())


def recall_lower_bound(approx_ids: ArrayLike, exact_ids: ArrayLike, z: float = 2.0) -> float:
    """Mean recall@k minus ``z`` standard errors of that mean over the query rows.

    What "recall holds on this model" means when an operating point is chosen from a
    sample of queries: a point whose sample mean only just touches the target would miss
    it on about half of all samples, so the choice asks the lower bound to meet it.
    """
    r = recall_per_query(approx_ids, exact_ids)
    if r.size < 2:
        return float(r.mean())
    return float(r.mean() - z * r.std(ddof=1) / np.sqrt(r.size))


class AnnIndex:
    """HNSW candidate search over whitened vectors, backed by a memory-mapped vector store.

    Build with :meth:`build`, reopen with :meth:`load`. Searches are thread-safe and may
    run concurrently; :meth:`set_ef` waits for in-flight searches to finish.
    """

    def __init__(
        self,
        index: hnswlib.Index,
        vectors_path: Path,
        *,
        M: int,
        ef_construction: int,
        ef_search: int,
        k_cand: int,
        seed: int,
        num_threads: int = 1,
        metric: str = "l2",
        lift_scale: float = 1.0,
        phi2: float = 0.0,
    ) -> None:
        """Wrap an hnswlib index and the ``vectors.npy`` it was built from (use build/load)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        store = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
        if store.dtype != np.float32 or store.ndim != 2:
            raise AnnArtifactError(vectors_path, f"expected a 2-D float32 array, got {store.dtype}")
        graph_dim = index.dim - (2 if metric == "lorentz_mips" else 0)
        if store.shape != (index.get_current_count(), graph_dim):
            raise AnnArtifactError(
                vectors_path,
                f"shape {store.shape} does not match the index "
                f"({index.get_current_count()}, {graph_dim})",
            )
        self._metric = metric
        self._lift_scale = float(lift_scale)
        self._phi2 = float(phi2)
        self._index = index
        self._vectors_path = Path(vectors_path)
        self._store: np.memmap = store
        # Plain-ndarray view of the same mapping: fancy indexing skips np.memmap's
        # Python-level __getitem__/__array_finalize__ (a few microseconds per call).
        self._store_view: NDArray[np.float32] = store.view(np.ndarray)
        self._count = int(store.shape[0])
        self._dim = int(store.shape[1])
        self._M = int(M)
        self._ef_construction = int(ef_construction)
        self._seed = int(seed)
        self._num_threads = int(num_threads)
        self._lock = _ReadWriteLock()
        self._ef_search = 0
        self._k_cand = 0
        self._fallback_lock = threading.Lock()
        self.fallback_count = 0
        self.set_ef(ef_search)
        self.set_k_cand(k_cand)
        self._cleanup: weakref.finalize[..., AnnIndex] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        vectors: ArrayLike,
        *,
        directory: str | os.PathLike[str] | None = None,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        k_cand: int = 128,
        seed: int = 100,
        num_threads: int = 1,
        metric: str = "l2",
        lift_scale: float = 1.0,
    ) -> AnnIndex:
        """Build an index over the rows of ``vectors`` (whitened, (n, d), finite).

        ``metric="lorentz_mips"`` builds the graph over the MIPS-augmented lift of the rows
        at ``lift_scale`` (module docstring), so candidates come in Lorentz order.

        The vectors are first written to ``directory/vectors.npy`` (a private temporary
        directory, removed with the object, when ``directory`` is None) and the index reads
        neighbours back from that file only. ``num_threads=1`` (default) makes the graph,
        and therefore the artifact checksums, reproducible for a given ``seed``; pass -1
        to build on all cores.
        """
        arr = np.asarray(vectors)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"vectors must be a non-empty 2-D array (n, d); got {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("vectors contain NaN or inf")
        if M < 2 or ef_construction < 1:
            raise ValueError(f"need M >= 2 and ef_construction >= 1; got {M}, {ef_construction}")
        owned = directory is None
        out = (
            Path(directory)
            if directory is not None
            else Path(tempfile.mkdtemp(prefix="lorentzcore-ann-"))
        )
        out.mkdir(parents=True, exist_ok=True)
        vectors_path = out / VECTORS_FILE
        _atomic_write(vectors_path, lambda fh: np.save(fh, arr, allow_pickle=False))
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        n = arr.shape[0]
        phi2 = 0.0
        graph = arr
        if metric == "lorentz_mips":
            graph, phi2 = mips_augment_points(arr, lift_scale)
        index = hnswlib.Index(space="l2", dim=graph.shape[1])
        index.init_index(
            max_elements=n, M=M, ef_construction=ef_construction, random_seed=int(seed)
        )
        index.add_items(graph, np.arange(n, dtype=np.int64), num_threads=num_threads)
        ann = cls(
            index,
            vectors_path,
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            k_cand=min(k_cand, n),
            seed=seed,
            num_threads=num_threads,
            metric=metric,
            lift_scale=lift_scale,
            phi2=phi2,
        )
        if owned:
            ann._cleanup = weakref.finalize(ann, shutil.rmtree, out, True)
        return ann

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, num_threads: int = 1, verify: bool = True
    ) -> AnnIndex:
        """Open an artifact written by :meth:`save`, restoring ef_search and k_cand.

        With ``verify`` (default) both data files are checked against their sha256 before
        hnswlib touches them: hnswlib trusts index.bin blindly and a corrupted graph can
        crash the process rather than raise.
        """
        base = Path(directory)
        meta_path = base / META_FILE
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise AnnArtifactError(meta_path, "missing") from None
        except (OSError, ValueError) as exc:
            raise AnnArtifactError(meta_path, f"unreadable ({exc})") from exc
        if meta.get("format_version") != ANN_FORMAT_VERSION:
            raise AnnArtifactError(
                meta_path,
                f"format_version {meta.get('format_version')!r}, expected {ANN_FORMAT_VERSION}",
            )
        required = ("dim", "count", "M", "ef_construction", "ef_search", "k_cand", "sha256")
        missing = [key for key in required if key not in meta]
        if missing:
            raise AnnArtifactError(meta_path, f"missing fields {missing}")
        if not isinstance(meta["sha256"], dict):
            raise AnnArtifactError(meta_path, "sha256 must map file names to digests")
        for name in (INDEX_FILE, VECTORS_FILE):
            path = base / name
            if not path.is_file():
                raise AnnArtifactError(path, "missing")
            if verify and _sha256(path) != meta["sha256"].get(name):
                raise AnnArtifactError(path, "sha256 does not match ann_meta.json (corrupted?)")
        dim, count = int(meta["dim"]), int(meta["count"])
        metric = str(meta.get("metric", "l2"))  # absent in indexes built before MIPS
        if metric not in METRICS:
            raise AnnArtifactError(meta_path, f"unknown metric {metric!r}")
        index = hnswlib.Index(space="l2", dim=dim + (2 if metric == "lorentz_mips" else 0))
        try:
            index.load_index(str(base / INDEX_FILE), max_elements=count)
        except RuntimeError as exc:
            raise AnnArtifactError(base / INDEX_FILE, f"hnswlib cannot load it ({exc})") from exc
        if index.get_current_count() != count:
            raise AnnArtifactError(
                base / INDEX_FILE, f"holds {index.get_current_count()} vectors, meta says {count}"
            )
        return cls(
            index,
            base / VECTORS_FILE,
            M=int(meta["M"]),
            ef_construction=int(meta["ef_construction"]),
            ef_search=int(meta["ef_search"]),
            k_cand=int(meta["k_cand"]),
            seed=int(meta.get("seed", 0)),
            num_threads=num_threads,
            metric=metric,
            lift_scale=float(meta.get("lift_scale", 1.0)),
            phi2=float(meta.get("phi2", 0.0)),
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write index.bin, vectors.npy and (last, so a half-written artifact never
        verifies) ann_meta.json into ``directory``; returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        vectors_path = out / VECTORS_FILE
        if not (vectors_path.exists() and vectors_path.samefile(self._vectors_path)):
            with self._vectors_path.open("rb") as src:
                _atomic_write(vectors_path, lambda fh: shutil.copyfileobj(src, fh))
        index_path = out / INDEX_FILE
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{INDEX_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            self._lock.acquire_read()
            try:
                self._index.save_index(tmp)
            finally:
                self._lock.release_read()
            os.replace(tmp, index_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {
            "format_version": ANN_FORMAT_VERSION,
            "space": "l2",
            "dtype": "float32",
            "dim": self._dim,
            "count": self._count,
            "M": self._M,
            "ef_construction": self._ef_construction,
            "ef_search": self._ef_search,
            "k_cand": self._k_cand,
            "seed": self._seed,
            **(
                {"metric": self._metric, "lift_scale": self._lift_scale, "phi2": self._phi2}
                if self._metric != "l2"
                else {}
            ),
            "sha256": {INDEX_FILE: _sha256(index_path), VECTORS_FILE: _sha256(vectors_path)},
        }
        payload = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
        _atomic_write(out / META_FILE, lambda fh: fh.write(payload))
        return out

    # ------------------------------------------------------------------ parameters
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    @property
    def M(self) -> int:
        return self._M

    @property
    def ef_construction(self) -> int:
        return self._ef_construction

    @property
    def ef_search(self) -> int:
        """ef used by searches; the effective value is ``max(ef_search, k)`` (hnswlib)."""
        return self._ef_search

    @property
    def k_cand(self) -> int:
        """Default candidate count for :meth:`search_with_vectors`; saved with the index."""
        return self._k_cand

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def metric(self) -> str:
        """ "l2" (candidates by L2 on z) or "lorentz_mips" (by Lorentz distance)."""
        return self._metric

    @property
    def lift_scale(self) -> float:
        """The lift scale the MIPS graph was built at (1.0 for an L2 index)."""
        return self._lift_scale

    @property
    def num_threads(self) -> int:
        """Threads one batch query may use (hnswlib's ``num_threads``; -1 = all cores).

        A single query always runs on the calling thread. Each query of a batch is answered
        exactly as it would be alone, whatever the thread count.
        """
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        value = int(value)
        if value == 0 or value < -1:
            raise ValueError(f"num_threads must be >= 1 or -1 (all cores); got {value}")
        self._num_threads = value

    @property
    def vector_store(self) -> np.memmap:
        """The read-only memory map of vectors.npy that neighbours are read from."""
        return self._store

    @property
    def vectors_path(self) -> Path:
        return self._vectors_path

    def set_ef(self, ef: int) -> None:
        """Change ef_search; waits until no search is in flight (see module docstring)."""
        ef = int(ef)
        if ef < 1:
            raise ValueError(f"ef_search must be >= 1; got {ef}")
        with self._lock.write():
            self._index.set_ef(ef)
            self._ef_search = ef

    def set_k_cand(self, k_cand: int) -> None:
        """Change the default candidate count (clamped use happens at query time)."""
        k_cand = int(k_cand)
        if k_cand < 1:
            raise ValueError(f"k_cand must be >= 1; got {k_cand}")
        self._k_cand = k_cand

    # ------------------------------------------------------------------ queries
    def search(self, Zq: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Approximate top-k: ids (n, k) int64 and squared L2 distances (n, k), ascending."""
        q = _as_queries(Zq, self._dim)
        k = _check_k(k, self._count)
        return self._knn(q, k)

    def search_with_vectors(
        self, Zq: ArrayLike, K_cand: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
        """Candidates for re-ranking: ids (n, K), squared L2 (n, K), vectors (n, K, d).

        ``K_cand`` defaults to :attr:`k_cand` (capped at the index size). One knn_query
        and one gather from the memory-mapped store.
        """
        q = _as_queries(Zq, self._dim)
        if K_cand is None:
            K = min(self._k_cand, self._count)
        else:
            K = _check_k(K_cand, self._count, "K_cand")
        ids, dists = self._knn(q, K)
        # np.take on the ndarray view of the map: ~1.6 us for 128 rows of a 200k x 16 store.
        # Sorting the ids first (page locality) measured slower (~9 us) with the store in
        # the page cache, which it is after the first few queries (12.8 MB).
        Z = np.take(self._store_view, ids.ravel(), axis=0).reshape(ids.shape[0], K, self._dim)
        return ids, dists, Z

    def get_vectors(self, ids: ArrayLike) -> NDArray[np.float32]:
        """Rows of the memory-mapped store for ``ids`` (any shape), shape ``ids.shape + (d,)``."""
        idx = np.asarray(ids)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"ids must be integers; got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self._count):
            raise IndexError(f"ids must be in [0, {self._count}); got {idx.min()}..{idx.max()}")
        return np.take(self._store_view, idx.ravel(), axis=0).reshape(*idx.shape, self._dim)

    def exact_search(self, Zq: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Brute-force top-k over the store in the index's own metric (the ground truth for
        recall): squared L2 on z, or for MIPS the augmented squared L2 (float64), i.e. the
        exact Lorentz top-k."""
        if self._metric == "l2":
            return exact_search(self._store, Zq, k)
        q = _as_queries(Zq, self._dim)
        n = self._count
        rows = max(1, _EXACT_BLOCK // max(n, 1))
        u0, sz = _lift_parts(np.asarray(self._store), self._lift_scale)
        p2 = self._phi2
        ids_out = np.empty((q.shape[0], _check_k(k, n)), dtype=np.int64)
        d_out = np.empty(ids_out.shape)
        for a in range(0, q.shape[0], rows):
            qu0, qsz = _lift_parts(q[a : a + rows], self._lift_scale)
            ip = -qu0[:, None] * u0[None, :] + qsz @ sz.T  # <u_q, u_i>_L = -cosh d
            D = (qu0 * qu0 + np.einsum("ij,ij->i", qsz, qsz))[:, None] + p2 - 2.0 * ip
            kk = ids_out.shape[1]
            part = (
                np.argpartition(D, kk - 1, axis=1)[:, :kk]
                if kk < n
                else np.tile(np.arange(n), (D.shape[0], 1))
            )
            dd = np.take_along_axis(D, part, axis=1)
            order = np.lexsort((part, dd), axis=1)
            ids_out[a : a + rows] = np.take_along_axis(part, order, axis=1)
            d_out[a : a + rows] = np.take_along_axis(dd, order, axis=1)
        return ids_out, d_out

    def _knn(self, q: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if self._metric == "lorentz_mips":
            return self._knn_graph(q, mips_augment_queries(q, self._lift_scale), k)
        return self._knn_graph(q, q, k)

    def _knn_graph(
        self, q: NDArray[np.float32], g: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """knn_query with the graph-space queries g (q: the same queries in z space)."""
        threads = 1 if q.shape[0] == 1 else self._num_threads
        self._lock.acquire_read()
        try:
            labels, dists = self._index.knn_query(g, k=k, num_threads=threads)
        except RuntimeError as exc:
            if _CONTIGUOUS_ERROR not in str(exc):
                raise
            self._lock.release_read()
            return self._knn_recover(q, g, k, threads)
        self._lock.release_read()
        return labels.astype(np.int64), dists

    def _knn_recover(
        self, q: NDArray[np.float32], g: NDArray[np.float32], k: int, threads: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The graph returned fewer than k points: retry once with a wider beam, then exact."""
        wide = min(self._count, 4 * max(self._ef_search, k))
        with self._lock.write():
            try:
                self._index.set_ef(wide)
                labels, dists = self._index.knn_query(g, k=k, num_threads=threads)
                return labels.astype(np.int64), dists
            except RuntimeError as exc:
                if _CONTIGUOUS_ERROR not in str(exc):
                    raise
            finally:
                self._index.set_ef(self._ef_search)
        with self._fallback_lock:
            self.fallback_count += 1
        ids, d64 = self.exact_search(q, k)
        return ids, d64.astype(np.float32)


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory and rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
