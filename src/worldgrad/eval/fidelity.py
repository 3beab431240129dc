"""Fidelity of predicted Push-T frames: image metrics and physical errors measured from the pixels.

Both the real and the predicted frame go through the same colour segmentation, so a model is judged by
where it draws the T and the agent, not by a simulator state it never saw. Push-T draws with fixed
colours (pygame names: LightSlateGray block, RoyalBlue agent, LightGreen goal, LightGray walls, white
board); each pixel takes the nearest of these colours. The T position is the centroid of its pixels;
its angle comes from fitting the T's outline (the shape has no rotational symmetry, so the fit is
unique, unlike second moments, which are nearly isotropic for this T). A missing or wrongly sized blob
counts as a failure (infinite error, visible as a "missing" rate and in medians), never as a centroid:
a blurred model's blobs drift to the board centre and would otherwise look accurate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BOARD = 512.0
PALETTE = np.array(
    [
        (255, 255, 255),  # board
        (144, 238, 144),  # goal T (LightGreen)
        (119, 136, 153),  # block T (LightSlateGray)
        (65, 105, 225),  # agent (RoyalBlue)
        (211, 211, 211),  # walls (LightGray)
    ],
    dtype=np.float32,
)
BLOCK, AGENT = 2, 3
T_AREA = 120.0 * 30 + 30 * 90  # board px^2: bar 120x30 + stem 30x90 (gym-pusht add_tee, scale 30)
AGENT_AREA = np.pi * 15.0**2
# T outline in the body frame relative to its area centroid (bar y in [0, 30], stem y in [30, 120])
_T_CENTROID_Y = (3600 * 15 + 2700 * 75) / 6300


def _angles(n: int = 360) -> np.ndarray:
    return np.linspace(-np.pi, np.pi, n, endpoint=False)


def _inside_t(x: np.ndarray, y: np.ndarray, margin: float) -> np.ndarray:
    """Whether body-frame points (relative to the area centroid) lie in the T grown by ``margin`` px."""
    y = y + _T_CENTROID_Y
    bar = (np.abs(x) <= 60 + margin) & (y >= -margin) & (y <= 30 + margin)
    stem = (np.abs(x) <= 15 + margin) & (y >= 30 - margin) & (y <= 120 + margin)
    return bar | stem


@dataclass(frozen=True)
class PushTPixels:
    """Object poses read from frames, in 512-px board units (x right, y down). Shapes: the frames' batch shape."""

    t_xy: np.ndarray
    """(..., 2) centroid of the T's pixels (nan when not found)"""
    t_angle: np.ndarray
    """(...) T angle in radians, gym-pusht convention (nan when not found)"""
    t_found: np.ndarray
    """(...) bool: a T-sized blob was found"""
    agent_xy: np.ndarray
    """(..., 2) centroid of the agent's pixels (nan when not found)"""
    agent_found: np.ndarray
    """(...) bool: an agent-sized blob was found"""


def classify(frames: np.ndarray) -> np.ndarray:
    """Palette index of every pixel: uint8 (..., H, W, 3) -> int (..., H, W)."""
    d = ((frames[..., None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _fit_angle(px: np.ndarray, py: np.ndarray, cell: float) -> float:
    """The angle whose T (centred on the blob) contains the most blob pixels, then the fewest outside ones."""
    ang = _angles()
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    # world offset = R(angle) @ body offset, so body = R(-angle) @ world
    bx, by = c * px + s * py, -s * px + c * py
    inside = _inside_t(bx, by, margin=cell).mean(1)
    core = _inside_t(bx, by, margin=-cell / 2).mean(1)  # tie-break: the pixels should fill the T's core
    return float(ang[np.argmax(inside + 0.5 * core)])


def segment(frames: np.ndarray, area_tolerance: tuple[float, float] = (0.4, 2.0)) -> PushTPixels:
    """Reads the T pose and the agent position from Push-T frames.

    Args:
        frames: uint8 (..., H, W, 3) images as the Push-T env renders them.
        area_tolerance: a blob counts as found when its pixel area is within these factors of the expected one.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"segment expects uint8 frames (..., H, W, 3), got {frames.dtype} {frames.shape}")
    batch, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    flat = frames.reshape(-1, h, w, 3)
    labels = classify(flat)
    cell = BOARD / w
    xs = (np.arange(w) + 0.5) * BOARD / w
    ys = (np.arange(h) + 0.5) * BOARD / h
    gx, gy = np.meshgrid(xs, ys)
    n = len(flat)
    t_xy, agent_xy = np.full((n, 2), np.nan), np.full((n, 2), np.nan)
    t_angle = np.full(n, np.nan)
    t_found, agent_found = np.zeros(n, bool), np.zeros(n, bool)
    lo, hi = area_tolerance
    for i in range(n):
        for cls, area, xy, found in ((BLOCK, T_AREA, t_xy, t_found), (AGENT, AGENT_AREA, agent_xy, agent_found)):
            m = labels[i] == cls
            got = m.sum() * cell * cell
            if lo * area <= got <= hi * area:
                found[i] = True
                xy[i] = gx[m].mean(), gy[m].mean()
        if t_found[i]:
            m = labels[i] == BLOCK
            t_angle[i] = _fit_angle(gx[m] - t_xy[i, 0], gy[m] - t_xy[i, 1], cell)
    return PushTPixels(
        t_xy=t_xy.reshape(*batch, 2),
        t_angle=t_angle.reshape(batch),
        t_found=t_found.reshape(batch),
        agent_xy=agent_xy.reshape(*batch, 2),
        agent_found=agent_found.reshape(batch),
    )


def pose_errors(real: PushTPixels, pred: PushTPixels) -> dict[str, np.ndarray]:
    """Per-frame errors of ``pred`` against ``real``; inf where the prediction lost an object the real frame has.

    Frames where the real segmentation failed (object hidden or off the board) give nan and are left out.
    """
    t_err = np.linalg.norm(pred.t_xy - real.t_xy, axis=-1)
    d = np.angle(np.exp(1j * (pred.t_angle - real.t_angle)))
    ang_err = np.degrees(np.abs(d))
    a_err = np.linalg.norm(pred.agent_xy - real.agent_xy, axis=-1)
    t_err = np.where(real.t_found & ~pred.t_found, np.inf, t_err)
    ang_err = np.where(real.t_found & ~pred.t_found, np.inf, ang_err)
    a_err = np.where(real.agent_found & ~pred.agent_found, np.inf, a_err)
    return {"t_pos_err_px": t_err, "t_angle_err_deg": ang_err, "agent_err_px": a_err}


def psnr(real: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 images (..., H, W, 3); identical frames give 100 dB (capped)."""
    mse = ((real.astype(np.float32) - pred.astype(np.float32)) ** 2).mean(axis=(-3, -2, -1))
    return np.minimum(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), 100.0)


def ssim(real: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, averaged over channels).

    Written here (a dozen lines) rather than adding a dependency such as scikit-image for one function.
    """
    x = torch.from_numpy(real.reshape(-1, *real.shape[-3:])).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(pred.reshape(-1, *pred.shape[-3:])).permute(0, 3, 1, 2).double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy().reshape(real.shape[:-3])


def copy_last_baseline(last_context: np.ndarray, steps: int) -> np.ndarray:
    """The copy-last-frame prediction: (N, H, W, 3) -> (N, steps, H, W, 3)."""
    return np.repeat(np.asarray(last_context)[:, None], steps, axis=1)


def fidelity_table(
    real: np.ndarray, pred: np.ndarray, horizons: Sequence[int], moved_px: float = 8.0
) -> dict[int, dict[str, float]]:
    """Open-loop prediction quality per horizon.

    Args:
        real: uint8 (N, T, H, W, 3): the recorded frames after the context; ``real[:, h - 1]`` is h steps ahead.
        pred: uint8 (N, T, H, W, 3): the model's frames for the same steps (open loop, recorded actions).
        horizons: steps ahead to report (each <= T).
        moved_px: a rollout counts as a contact segment at horizon h when the real T moved more than this.

    Returns:
        ``{h: {psnr, ssim, t_pos_err_px, t_angle_err_deg, agent_err_px, t_pos_err_px_moved,
        t_missing, agent_missing, n, n_moved}}``: means for psnr/ssim, medians for errors (a lost object
        counts as infinite error), rates in [0, 1]; ``*_moved`` only over rollouts whose T moved.
    """
    real, pred = np.asarray(real), np.asarray(pred)
    if real.shape != pred.shape or real.ndim != 5:
        raise ValueError(f"real and pred must be uint8 (N, T, H, W, 3) of equal shape, got {real.shape}, {pred.shape}")
    if max(horizons) > real.shape[1] or min(horizons) < 1:
        raise ValueError(f"horizons must lie in 1..{real.shape[1]} (frames predicted), got {list(horizons)}")
    idx = [h - 1 for h in horizons]
    seg_r, seg_p = segment(real[:, idx]), segment(pred[:, idx])
    first = segment(real[:, :1])  # where the T was one step after the context
    errs = pose_errors(seg_r, seg_p)
    moved = np.linalg.norm(seg_r.t_xy - first.t_xy, axis=-1) > moved_px
    p, s = psnr(real[:, idx], pred[:, idx]), ssim(real[:, idx], pred[:, idx])

    def med(v: np.ndarray) -> float:
        v = v[~np.isnan(v)]
        return float(np.median(v)) if len(v) else float("nan")

    out: dict[int, dict[str, float]] = {}
    for k, h in enumerate(horizons):
        out[h] = {
            "psnr": float(p[:, k].mean()),
            "ssim": float(s[:, k].mean()),
            "t_pos_err_px": med(errs["t_pos_err_px"][:, k]),
            "t_angle_err_deg": med(errs["t_angle_err_deg"][:, k]),
            "agent_err_px": med(errs["agent_err_px"][:, k]),
            "t_pos_err_px_moved": med(errs["t_pos_err_px"][moved[:, k], k]),
            "t_missing": float((seg_r.t_found[:, k] & ~seg_p.t_found[:, k]).mean()),
            "agent_missing": float((seg_r.agent_found[:, k] & ~seg_p.agent_found[:, k]).mean()),
            "n": float(len(real)),
            "n_moved": float(moved[:, k].sum()),
        }
    return out
