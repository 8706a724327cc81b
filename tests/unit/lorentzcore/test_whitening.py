import warnings

import numpy as np
import pytest
from lorentzcore_data import multivariate_t, normalised, random_shape

from lorentzcore.whitening import (
    TylerResult,
    Whitener,
    WhiteningError,
    tyler_scatter,
)


def naive_tyler(X: np.ndarray, rho: float, iters: int = 2000) -> np.ndarray:
    """Textbook (regularised) Tyler about the origin: explicit inverse, no tricks.

    Mirrors the documented estimator: features divided by median |x| (the MAD about a zero
    location), fixed point S = (1-rho) d/n sum y y^T / (y^T S^-1 y) + rho I at trace d,
    then mapped back to the original units and renormalised.
    """
    n, d = X.shape
    unit = np.median(np.abs(X), axis=0)
    Y = X / unit
    S = np.eye(d)
    for _ in range(iters):
        q = np.einsum("ij,jk,ik->i", Y, np.linalg.inv(S), Y)
        S_new = (1 - rho) * d / n * (Y.T / q) @ Y + rho * np.eye(d)
        S_new *= d / np.trace(S_new)
        if np.linalg.norm(S_new - S) < 1e-13:
            break
        S = S_new
    return normalised(S * np.outer(unit, unit))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_fixed_point_matches_naive_reference_when_data_centred_at_origin(rng, rho):
    shape = random_shape(5, rng)
    X = multivariate_t(400, shape, df=3.0, rng=rng)
    result = tyler_scatter(X, shrinkage=rho, center=False, tol=1e-12)
    np.testing.assert_allclose(result.scatter, naive_tyler(X, rho), atol=1e-8)
    assert result.report.shrinkage == rho
    assert np.array_equal(result.location, np.zeros(5))


@pytest.mark.parametrize("shrinkage", [None, 0.0, 0.25])
def test_scatter_has_trace_d_and_cholesky_reconstructs_it(rng, shrinkage):
    X = multivariate_t(600, random_shape(8, rng), df=2.5, rng=rng) + 10.0
    result = tyler_scatter(X, shrinkage=shrinkage)
    assert isinstance(result, TylerResult)
    assert np.trace(result.scatter) == pytest.approx(8.0, rel=1e-12)
    assert result.report.trace == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(result.scatter, result.scatter.T)
    L = result.cholesky
    assert np.array_equal(L, np.tril(L)) and np.all(np.diag(L) > 0)
    np.testing.assert_allclose(L @ L.T, result.scatter, atol=1e-12)
    assert result.report.eigmin == pytest.approx(np.linalg.eigvalsh(result.scatter)[0])
    assert result.report.eigmin > 0


@pytest.mark.parametrize("df", [2.0, 2.5, 3.0])
def test_converges_within_500_iterations_on_heavy_tailed_data(rng, df):
    X = multivariate_t(3000, random_shape(16, rng), df=df, rng=rng)
    result = tyler_scatter(X)
    assert result.report.converged
    assert result.report.iterations <= 500
    assert result.report.final_change < 1e-7


@pytest.mark.parametrize("df", [2.0, 2.5, 3.0])
def test_tyler_recovers_student_t_shape_far_better_than_sample_covariance_with_outliers(rng, df):
    d = 8
    shape = random_shape(d, rng)
    centre = np.linspace(-3.0, 3.0, d)
    X = multivariate_t(4000, shape, df=df, rng=rng) + centre
    X[:8] = centre + 1e4 * rng.standard_normal((8, d))  # gross outliers: 0.2% of rows

    result = tyler_scatter(X)
    tyler_err = np.linalg.norm(result.scatter - shape)
    sample_err = np.linalg.norm(normalised(np.cov(X, rowvar=False)) - shape)

    assert tyler_err < 0.5
    assert sample_err > 5 * tyler_err
    assert np.max(np.abs(result.location - centre)) < 0.1
    assert np.max(np.abs(X.mean(axis=0) - centre)) > 10 * np.max(np.abs(result.location - centre))


def test_whitened_data_has_identity_tyler_scatter_and_zero_location(rng):
    """Affine equivariance of the joint fit: refitting on z must give (I, 0)."""
    A = rng.standard_normal((6, 6))
    X = multivariate_t(3000, np.eye(6), df=2.5, rng=rng) @ A.T + 7.0
    whitener = Whitener.from_tyler(tyler_scatter(X, shrinkage=0.0, tol=1e-10))
    refit = tyler_scatter(whitener.transform(X), shrinkage=0.0, tol=1e-10)
    np.testing.assert_allclose(refit.scatter, np.eye(6), atol=1e-7)
    np.testing.assert_allclose(refit.location, np.zeros(6), atol=1e-7)


def test_affine_map_of_data_maps_the_fit(rng):
    A = rng.standard_normal((4, 4))
    b = np.array([1.0, -2.0, 30.0, 0.5])
    X = multivariate_t(2000, random_shape(4, rng), df=3.0, rng=rng)
    base = tyler_scatter(X, shrinkage=0.0, tol=1e-11)
    moved = tyler_scatter(X @ A.T + b, shrinkage=0.0, tol=1e-11)
    np.testing.assert_allclose(moved.scatter, normalised(A @ base.scatter @ A.T), atol=1e-7)
    np.testing.assert_allclose(moved.location, A @ base.location + b, atol=1e-7)


def test_whitened_gaussian_data_has_identity_covariance(rng):
    d = 16
    cov = 25.0 * random_shape(d, rng)
    X = rng.multivariate_normal(np.full(d, 3.0), cov, size=20000)
    Z = Whitener.fit(X).transform(X)
    sample = np.cov(Z, rowvar=False)
    # Identity shape (normalised covariance) and, with the Gaussian-consistent scale, identity
    # covariance; entry-wise sampling error at n=20000 is ~0.01, of the mean variance ~0.003.
    np.testing.assert_allclose(normalised(sample), np.eye(d), atol=0.04)
    np.testing.assert_allclose(sample, np.eye(d), atol=0.04)
    assert np.trace(sample) / d == pytest.approx(1.0, abs=0.015)
    np.testing.assert_allclose(Z.mean(axis=0), np.zeros(d), atol=0.05)


def test_small_n_relative_to_d_uses_shrinkage_and_stays_positive_definite(rng):
    d = 16
    shape = random_shape(d, rng)
    for n in (4, 10, 16, 24):
        result = tyler_scatter(multivariate_t(n, shape, df=3.0, rng=rng))
        assert result.report.shrinkage > 1 - n / d
        assert result.report.shrinkage > 0.05
        assert result.report.converged
        assert result.report.eigmin > 1e-3
        np.linalg.cholesky(result.scatter)


def test_adaptive_shrinkage_fades_as_n_grows(rng):
    shape = random_shape(16, rng)
    small = tyler_scatter(multivariate_t(40, shape, df=3.0, rng=rng)).report.shrinkage
    large = tyler_scatter(multivariate_t(20000, shape, df=3.0, rng=rng)).report.shrinkage
    assert small > 10 * large
    assert large < 0.01


def test_fixed_shrinkage_below_existence_bound_is_refused(rng):
    X = rng.standard_normal((6, 12))
    with pytest.raises(WhiteningError, match="too small for 6 usable rows"):
        tyler_scatter(X, shrinkage=0.0)
    with pytest.raises(WhiteningError, match="need shrinkage >="):
        tyler_scatter(X, shrinkage=0.2)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]]), "NaN or inf in 1 row"),
        (np.array([[1.0, 2.0], [np.inf, 3.0], [0.0, 1.0]]), r"rows \[1\]"),
        (np.ones((1, 3)), "at least 2 rows"),
        (np.ones(5), "2-D array"),
        (np.array([["a", "b"], ["c", "d"]]), "real-valued"),
    ],
)
def test_invalid_input_gives_clear_error(X, message):
    with pytest.raises(WhiteningError, match=message):
        tyler_scatter(X)


def test_invalid_parameters_are_refused(rng):
    X = rng.standard_normal((50, 3))
    with pytest.raises(WhiteningError, match="shrinkage"):
        tyler_scatter(X, shrinkage=1.5)
    with pytest.raises(WhiteningError, match="max_iter"):
        tyler_scatter(X, max_iter=0)


@pytest.mark.parametrize("defect", ["constant", "collinear"])
def test_rank_deficient_data_fails_positive_definite_check_unless_shrunk(rng, defect):
    X = rng.standard_normal((500, 5))
    if defect == "constant":
        X[:, 2] = 4.0
    else:
        X[:, 3] = 2.0 * X[:, 1] - X[:, 0]
    with pytest.raises(WhiteningError, match="not positive definite"):
        tyler_scatter(X, shrinkage=0.0)
    shrunk = tyler_scatter(X)
    assert shrunk.report.shrinkage > 0
    assert shrunk.report.eigmin > 0


def test_rows_exactly_at_the_location_do_not_divide_by_zero(rng):
    X = rng.standard_normal((500, 6))
    X[:200] = 1.5  # 40% of rows on one point: it is the spatial median
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 RuntimeWarning
        result = tyler_scatter(X)
    np.testing.assert_allclose(result.location, np.full(6, 1.5), atol=1e-9)
    assert result.report.n_at_location == 200
    assert np.isfinite(result.scatter).all()
    assert result.report.eigmin > 0


def test_zero_rows_when_not_centring_are_ignored(rng):
    X = rng.standard_normal((400, 4))
    with_zeros = np.vstack([X, np.zeros((25, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = tyler_scatter(with_zeros, shrinkage=0.0, center=False, tol=1e-10)
    b = tyler_scatter(X, shrinkage=0.0, center=False, tol=1e-10)
    assert a.report.n_at_location == 25
    # Zero rows carry no direction; MAD scaling changes, but shape is scale-equivariant.
    np.testing.assert_allclose(a.scatter, b.scatter, atol=1e-8)


def test_one_dimensional_data_has_unit_scatter_and_median_location():
    X = np.array([[1.0], [2.0], [3.0], [10.0], [-50.0]])
    result = tyler_scatter(X)
    assert result.scatter.tolist() == [[1.0]]
    assert result.location.tolist() == [2.0]


def test_non_convergence_warns_and_is_reported(rng):
    X = multivariate_t(500, random_shape(8, rng), df=2.5, rng=rng)
    with pytest.warns(RuntimeWarning, match="did not converge in 2 iterations"):
        result = tyler_scatter(X, max_iter=2)
    assert not result.report.converged
    assert result.report.iterations == 2


class TestWhitener:
    @pytest.fixture
    def fitted(self, rng) -> tuple[Whitener, np.ndarray]:
        X = multivariate_t(2000, 4.0 * random_shape(16, rng), df=3.0, rng=rng) + 2.0
        return Whitener.fit(X), X

    def test_transform_is_inverse_cholesky_of_centred_rows(self, fitted):
        whitener, X = fitted
        expected = np.linalg.solve(whitener.cholesky, (X - whitener.location).T).T
        np.testing.assert_allclose(whitener.transform(X), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(whitener.inverse_transform(whitener.transform(X)), X)

    def test_float32_path_stays_float32_and_agrees_with_float64(self, fitted):
        whitener, X = fitted
        z32 = whitener.transform(X.astype(np.float32))
        z64 = whitener.transform(X)
        assert z32.dtype == np.float32 and z64.dtype == np.float64
        np.testing.assert_allclose(z32, z64, rtol=1e-4, atol=1e-4)

    def test_single_vector_keeps_its_shape(self, fitted):
        whitener, X = fitted
        z = whitener.transform(X[3])
        assert z.shape == (16,)
        np.testing.assert_allclose(z, whitener.transform(X[3:4])[0])

    def test_wrong_width_is_refused(self, fitted):
        whitener, _ = fitted
        with pytest.raises(WhiteningError, match="d=16"):
            whitener.transform(np.zeros((2, 15)))

    def test_save_and_load_round_trip_exactly(self, fitted, tmp_path):
        whitener, X = fitted
        path = whitener.save(tmp_path / "fold_0" / "whitener.npz")
        loaded = Whitener.load(path)
        assert np.array_equal(loaded.location, whitener.location)
        assert np.array_equal(loaded.cholesky, whitener.cholesky)
        assert np.array_equal(loaded.transform(X), whitener.transform(X))

    def test_load_refuses_pickled_objects(self, tmp_path):
        path = tmp_path / "evil.npz"
        np.savez(path, format_version=1, location=np.array([object()]), cholesky=np.eye(1))
        with pytest.raises(WhiteningError, match=r"evil\.npz"):
            Whitener.load(path)

    def test_load_refuses_other_versions_and_missing_arrays(self, tmp_path):
        path = tmp_path / "w.npz"
        np.savez(path, format_version=99, location=np.zeros(2), cholesky=np.eye(2))
        with pytest.raises(WhiteningError, match="format_version 99"):
            Whitener.load(path)
        np.savez(path, format_version=1, location=np.zeros(2))
        with pytest.raises(WhiteningError, match="missing arrays"):
            Whitener.load(path)

    def test_non_triangular_or_singular_factor_is_refused(self):
        with pytest.raises(WhiteningError, match="lower triangular"):
            Whitener(location=np.zeros(2), cholesky=np.array([[1.0, 0.5], [0.0, 1.0]]))
        with pytest.raises(WhiteningError, match="positive diagonal"):
            Whitener(location=np.zeros(2), cholesky=np.array([[1.0, 0.0], [0.5, 0.0]]))
