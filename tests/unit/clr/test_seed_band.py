"""Tests of clr.seed_band: the band across seeds, and the confidence that uses it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clr._result import RangeTestResult
from clr.fused import FusedRangeTest
from clr.plots import plot_seed_band
from clr.seed_band import BandStats, SeedBand
from clr.suggest import SEED_SPREAD_FREE, seed_agreement, suggest_all
from clr.workloads import build_workload

GRID = np.logspace(-6.0, 0.5, 300)


def result(losses: np.ndarray, *, accuracies: np.ndarray | None = None) -> RangeTestResult:
    """A completed range test on (a prefix of) GRID with these losses."""
    n = losses.shape[0]
    return RangeTestResult(
        lrs=GRID[:n].copy(),
        losses=np.asarray(losses, dtype=np.float64),
        smoothed_losses=np.asarray(losses, dtype=np.float64) * 1.01,
        start_lr=float(GRID[0]),
        end_lr=float(GRID[-1]),
        num_iter=GRID.shape[0],
        sweep="exp",
        smoothing=0.95,
        diverge_th=5.0,
        stop_reason="completed" if n == GRID.shape[0] else "diverged",
        stop_detail="",
        device="cpu",
        seconds=0.0,
        accuracies=accuracies,
    )


def curve(lr_min: float, seed: int) -> RangeTestResult:
    """A loss of 2.3 that drops by 1.5 around lr 1e-2, slides to its minimum at
    ``lr_min`` and rises after it, with 2 % seeded noise."""
    x = np.log10(GRID)
    drop = 1.5 / (1.0 + np.exp(-(x + 2.0) / 0.25))
    slide = 0.5 * np.clip(x + 1.25, 0.0, max(0.0, math.log10(lr_min) + 1.25))
    rise = 2.0 * np.maximum(0.0, x - math.log10(lr_min)) ** 2
    clean = 2.3 - drop - slide + rise
    rng = np.random.default_rng(seed)
    return result(clean * (1.0 + 0.02 * rng.standard_normal(x.shape[0])))


class TestSeedBand:
    def test_mean_and_std_are_numpys_over_the_members(self):
        rng = np.random.default_rng(0)
        losses = rng.uniform(0.5, 2.5, size=(4, 300))
        acc = rng.uniform(0.0, 1.0, size=(4, 300))
        band = SeedBand.from_results([result(losses[k], accuracies=acc[k]) for k in range(4)])
        np.testing.assert_allclose(band.losses.mean, losses.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(band.losses.std, losses.std(axis=0), rtol=1e-12)
        np.testing.assert_allclose(band.smoothed.mean, (losses * 1.01).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(band.smoothed.std, (losses * 1.01).std(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(band.smoothed.min, (losses * 1.01).min(axis=0))
        np.testing.assert_array_equal(band.smoothed.max, (losses * 1.01).max(axis=0))
        assert band.accuracies is not None
        np.testing.assert_allclose(band.accuracies.mean, acc.mean(axis=0), rtol=1e-12)
        assert band.n.tolist() == [4] * 300
        assert (band.end, band.end_lr, band.num_members) == (300, None, 4)

    def test_members_that_stopped_early_leave_the_band(self):
        rng = np.random.default_rng(1)
        full = rng.uniform(0.5, 2.5, size=(4, 300))
        stops = [300, 250, 120, 60]
        band = SeedBand.from_results([result(full[k, :s]) for k, s in enumerate(stops)])
        assert band.n[:60].tolist() == [4] * 60
        assert band.n[60:120].tolist() == [3] * 60
        assert band.n[120:250].tolist() == [2] * 130
        assert band.n[250:].tolist() == [1] * 50
        # at step 200 only members 0 and 1 remain
        np.testing.assert_allclose(band.losses.mean[200], full[:2, 200].mean(), rtol=1e-12)
        np.testing.assert_allclose(band.losses.std[200], full[:2, 200].std(), rtol=1e-12)
        assert band.losses.std[280] == 0.0
        assert band.losses.mean[280] == full[0, 280]
        # fewer than half (2 of 4) remain from step 250
        assert band.end == 250
        assert band.end_lr == pytest.approx(GRID[250])
        assert band.accuracies is None
        mean = band.mean_curve()
        assert np.asarray(mean.lrs).shape == (250,)

    def test_results_on_different_grids_are_refused(self):
        a = result(np.ones(300))
        b = result(np.ones(300))
        b.lrs = b.lrs * 1.5
        with pytest.raises(ValueError, match=r"results\[1\] has lr"):
            SeedBand.from_results([a, b])
        with pytest.raises(ValueError, match="at least one"):
            SeedBand.from_results([])

    def test_band_stats_to_dict_is_json(self):
        band = SeedBand.from_results([result(np.full(300, 1.0)), result(np.full(300, 3.0))])
        data = json.loads(json.dumps(band.smoothed.to_dict()))
        assert data["mean"][0] == pytest.approx(2.02)
        assert data["std"][0] == pytest.approx(1.01)
        assert isinstance(band.losses, BandStats)


class TestSeedSuggestions:
    def test_real_seeds_of_a_fused_range_test_give_a_band_around_the_bounds(self):
        ws = [build_workload("digits_mlp", seed=s) for s in range(4)]
        test = FusedRangeTest([w.model for w in ws], "sgd", ws[0].loss_fn)
        results = test.run([w.train_loader for w in ws], num_iter=100)
        band = SeedBand.from_results(results)
        s = band.suggest()
        low, high = s.max_lr_band
        assert low <= s.default.max_lr <= high
        assert s.base_lr_band[0] <= s.default.base_lr <= s.base_lr_band[1]
        singles = [suggest_all(r).default for r in results]
        assert low == min(x.max_lr for x in singles)
        assert high == max(x.max_lr for x in singles)
        geo = math.exp(np.mean([math.log(x.max_lr) for x in singles]))
        assert s.default.max_lr == pytest.approx(geo, rel=1e-12)
        assert s.seed_spread == pytest.approx(high / low)
        assert 0.0 <= s.confidence <= 1.0
        assert s.default.evidence["seeds"] == 4
        json.dumps(s.to_dict(), allow_nan=False)

    def test_seeds_whose_minima_differ_by_10x_lose_confidence_and_warn(self):
        lr_mins = [0.03, 0.3, 0.06, 0.15]
        results = [curve(m, seed=k) for k, m in enumerate(lr_mins)]
        alone = [suggest_all(r) for r in results]
        s = SeedBand.from_results(results).suggest()
        assert s.seed_spread > 5.0
        assert s.confidence < min(a.confidence for a in alone)
        assert s.confidence < 0.4
        ratio = s.seed_spread
        text = f"max_lr varies {ratio:.1f}x across 4 seeds"
        assert any(w.startswith(text) for w in s.warnings)
        for m in s.members:
            assert m is not None
            assert m.seeds == 4
            assert any(w.startswith(text) for w in m.warnings)
        assert s.spreads["max_fraction"].ratio == pytest.approx(ratio)
        assert s.spreads["max_fraction"].log10_std > 0.2

    def test_seeds_that_agree_raise_confidence_without_a_warning(self):
        results = [curve(0.3, seed=k) for k in range(4)]
        alone = [suggest_all(r) for r in results]
        s = SeedBand.from_results(results).suggest()
        assert s.seed_spread < SEED_SPREAD_FREE
        assert s.confidence > float(np.median([a.confidence for a in alone]))
        assert not any("across 4 seeds" in w for w in s.warnings)
        assert s.informative
        for m, a in zip(s.members, alone, strict=True):
            assert m is not None
            assert m.default == a.default  # the seeds change the confidence, not the bounds
            assert m.confidence >= a.confidence

    def test_warnings_name_a_member_by_its_seed_when_the_seeds_are_given(self):
        flat = result(np.full(300, 2.3))
        results = [curve(0.3, seed=0), curve(0.3, seed=1), flat]
        by_index = SeedBand.from_results(results).suggest()
        by_seed = SeedBand.from_results(results, seeds=[11, 12, 13]).suggest()
        assert list(by_index.failed) == list(by_seed.failed) == [2]
        assert any(w.startswith("seed 2 gave no bounds (") for w in by_index.warnings)
        assert any(w.startswith("seed 13 gave no bounds (") for w in by_seed.warnings)
        assert not any(w.startswith("seed 2 ") for w in by_seed.warnings)
        with pytest.raises(ValueError, match="seeds must hold 3 seeds, one per result, got 2"):
            SeedBand.from_results(results, seeds=[11, 12])

    def test_single_run_dict_is_unchanged(self):
        s = suggest_all(curve(0.3, seed=0))
        assert s.seeds is None
        assert s.seed_spread is None
        assert "seeds" not in s.to_dict()
        seeded = suggest_all(curve(0.3, seed=0), seed_max_lrs=[0.3, 0.3])
        assert seeded.to_dict()["seeds"] == 2
        assert seeded.to_dict()["seed_spread"] == 1.0


class TestSeedAgreement:
    @pytest.mark.parametrize(
        ("max_lrs", "expected"),
        [
            ([0.1], 0.6),  # one seed: no agreement to add
            ([0.1, 0.1], 0.6 + 0.4 * 0.5 * 0.5),  # two identical seeds: a quarter of the doubt
            ([0.1, 0.2], 0.6),  # exactly 2x: nothing either way
            ([0.1, 1.0], 0.0),  # 10x: no confidence left
            ([0.1, 0.4], 0.6 * (1 - math.log(2) / math.log(5))),
        ],
    )
    def test_values(self, max_lrs, expected):
        confidence, _ = seed_agreement(max_lrs, 0.6)
        assert confidence == pytest.approx(expected, abs=1e-12)

    def test_the_warning_names_the_spread(self):
        _, warning = seed_agreement([0.1, 0.31, 0.2, 0.15], 0.8)
        assert warning is not None
        assert warning.startswith("max_lr varies 3.1x across 4 seeds (from 0.1 to 0.31)")
        assert seed_agreement([0.1, 0.15], 0.8)[1] is None

    @pytest.mark.parametrize("bad", [[], [0.1, 0.0], [0.1, math.inf]])
    def test_bad_max_lrs_are_refused(self, bad):
        with pytest.raises(ValueError, match="max_lrs must"):
            seed_agreement(bad, 0.5)


class TestPlotSeedBand:
    def test_mean_band_seeds_and_bounds_are_drawn(self, tmp_path):
        results = [curve(m, seed=k) for k, m in enumerate([0.3, 0.2, 0.25])]
        results[2] = result(results[2].losses[:100])  # one seed stops early
        band = SeedBand.from_results(results)
        s = band.suggest()
        fig = plot_seed_band(band, s, path=tmp_path / "band.png")
        assert (tmp_path / "band.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        lines = {line.get_gid(): line for line in ax.get_lines()}
        np.testing.assert_array_equal(lines["mean"].get_ydata(), band.smoothed.mean)
        assert {"seed-0", "seed-1", "seed-2"} <= set(lines)
        assert len(lines["seed-2"].get_xdata()) == 100
        (span,) = [p for p in ax.patches if p.get_gid() == "suggested-range"]
        assert span.get_x() == pytest.approx(s.base_lr_band[0], rel=1e-12)
        assert span.get_x() + span.get_width() == pytest.approx(s.max_lr_band[1], rel=1e-12)
        assert any(c.get_gid() == "seed-band" for c in ax.collections)

    def test_bad_spread_is_refused(self):
        band = SeedBand.from_results([result(np.ones(300))])
        with pytest.raises(ValueError, match="spread must be"):
            plot_seed_band(band, spread="iqr")
        fig = plot_seed_band(band, spread="minmax")
        assert fig.axes[0].get_xscale() == "log"
