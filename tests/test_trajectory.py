import math

import numpy as np
import pytest

from worldgrad.eval.trajectory import (
    CubeEpisodeResult,
    format_cube_table,
    path_metrics,
    steps_to_success,
    summarize_cube,
)


def circle(radius: float, turns: float, n: int = 2000) -> np.ndarray:
    """A base driving counter-clockwise on a circle, facing along it (heading = angle + pi/2)."""
    a = np.linspace(0.0, 2 * np.pi * turns, n)
    return np.stack([radius * np.cos(a), radius * np.sin(a), a + np.pi / 2], axis=1)


def test_straight_line_has_straightness_one_and_no_curvature():
    t = np.linspace(0.0, 3.0, 50)
    poses = np.stack([1.0 + 0.6 * t, -2.0 + 0.8 * t, np.full_like(t, np.arctan2(0.8, 0.6))], axis=1)
    m = path_metrics(poses)
    assert m.path_length == pytest.approx(3.0) and m.displacement == pytest.approx(3.0)
    assert m.straightness == pytest.approx(1.0) and m.curvature == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("radius", [0.5, 2.0])
def test_circle_curvature_is_one_over_radius(radius):
    m = path_metrics(circle(radius, turns=1.0))
    assert m.curvature == pytest.approx(1.0 / radius, rel=1e-3)
    assert m.path_length == pytest.approx(2 * np.pi * radius, rel=1e-3)
    assert m.straightness == pytest.approx(0.0, abs=1e-3)  # back where it started
    half = path_metrics(circle(radius, turns=0.5))
    assert half.straightness == pytest.approx(2 / np.pi, rel=1e-3)  # diameter / half circumference


def test_heading_wraps_across_pi_and_zigzag_is_less_straight():
    # Heading jumps from +pi to -pi numerically while turning a tiny bit: that is 0.02 rad, not 2 pi.
    poses = np.array([[0.0, 0.0, np.pi - 0.01], [1.0, 0.0, -np.pi + 0.01]])
    assert path_metrics(poses).curvature == pytest.approx(0.02)
    zigzag = np.array([[0, 0, 0], [1, 1, 0], [2, 0, 0], [3, 1, 0], [4, 0, 0]], float)
    assert path_metrics(zigzag).straightness == pytest.approx(4 / (4 * np.sqrt(2)))


def test_standing_still_is_undefined_not_zero_and_bad_shapes_are_rejected():
    spin = np.stack([np.zeros(10), np.zeros(10), np.linspace(0, 3, 10)], axis=1)
    m = path_metrics(spin)
    assert m.path_length == 0.0 and math.isnan(m.straightness) and math.isnan(m.curvature)
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        path_metrics(np.zeros((5, 2)))


def test_steps_to_success_counts_from_reset():
    assert steps_to_success([False, False, True, True]) == 2
    assert steps_to_success([False, False]) is None


def test_summary_skips_undefined_metrics_and_table_prints_dashes():
    def result(seed, success, straight):
        return CubeEpisodeResult(seed, success, 10, 7 if success else None, 0.1, 0.1, 1.0, straight, 0.5, 0.5)

    s = summarize_cube([result(0, True, 0.8), result(1, False, float("nan"))])
    assert s["success_rate"] == 0.5 and s["mean_steps_to_success"] == 7.0
    assert s["mean_straightness"] == pytest.approx(0.8)  # the NaN episode is left out
    none = summarize_cube([result(0, False, float("nan"))])
    assert none["mean_steps_to_success"] is None and none["mean_straightness"] is None
    table = format_cube_table({"random": none, "operator:expert": s})
    assert "| random | 1 | 0.0% (0%-79%) | - | - |" in table and "| operator:expert | 2 | 50.0%" in table
