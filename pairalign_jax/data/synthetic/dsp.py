"""Filter primitives of the synthesizer (numpy and scipy.signal only).

`time_varying_filter` runs a direct-form filter whose coefficients change every block, exactly
(each run of identical blocks is one `lfilter` call whose initial state is rebuilt from the true
input/output history). `lfilter` calls scipy's lfilter core directly when an import-time
self-check (`check_fast_filter`) confirms it matches `scipy.signal.lfilter` (the public
wrapper's validation costs more than filtering a 5 ms block); otherwise the public function is
used. `FAST_FILTER_OK` records the outcome (tests patch it to exercise the fallback).
"""

import numpy as np
import scipy.signal

# scipy's lfilter core without the per-call input validation (~10 us of a ~12 us call); used only
# if `check_fast_filter` confirms it matches `scipy.signal.lfilter`.
try:
  from scipy.signal import _sigtools

  _LINEAR_FILTER = getattr(_sigtools, '_linear_filter', None)
except ImportError:  # pragma: no cover
  _LINEAR_FILTER = None


def interp_nan(x_knots, y_knots, x):
  """Piecewise-linear interpolation of each column of y_knots [K, C], ignoring NaN knots."""
  out = np.empty((len(x), y_knots.shape[1]))
  for c in range(y_knots.shape[1]):
    ok = np.isfinite(y_knots[:, c])
    out[:, c] = np.interp(x, x_knots[ok], y_knots[ok, c])
  return out


def smooth(x, width):
  """Moving average along axis 0 with edge padding (x: [T, C])."""
  if width <= 1:
    return x
  pad = width // 2
  xp = np.pad(x, ((pad, width - 1 - pad), (0, 0)), mode='edge')
  c = np.cumsum(np.concatenate([np.zeros((1, x.shape[1])), xp]), axis=0)
  return (c[width:] - c[:-width]) / width


def poly_mul(a, s):
  """Batched polynomial product: a [B, n] x second-order s [B, 3] -> [B, n + 2]."""
  out = np.zeros((a.shape[0], a.shape[1] + 2))
  out[:, :-2] += a * s[:, :1]
  out[:, 1:-1] += a * s[:, 1:2]
  out[:, 2:] += a * s[:, 2:]
  return out


def resonator_poly(freq, bw, sample_rate):
  """[..., 3] denominators 1 - 2 r cos(theta) z^-1 + r^2 z^-2."""
  r = np.exp(-np.pi * bw / sample_rate)
  theta = 2 * np.pi * freq / sample_rate
  return np.stack([np.ones_like(r), -2 * r * np.cos(theta), r * r], axis=-1)


def time_varying_filter(b, a, x, block, first, last):
  """y[n] = sum_j b_j(n) x[n-j] - sum_{j>=1} a_j(n) y[n-j], coefficients constant per block.

  b: [nb, 3], a: [nb, M + 1] (a[:, 0] == 1), x: [N]; blocks `first .. last-1` are filtered, the
  output elsewhere is zero. Each run of blocks with identical coefficients is one `lfilter` call
  whose initial state is computed from the true past inputs and outputs, so changing
  coefficients never leaves a stale filter state (this is the exact time-varying recursion).
  """
  order = a.shape[1] - 1
  n = len(x)
  bp = np.zeros((b.shape[0], order + 2))
  bp[:, : b.shape[1]] = b
  ap = np.zeros((a.shape[0], order + 2))
  ap[:, : order + 1] = a
  # Runs of identical coefficients between `first` and `last`.
  coef = np.concatenate([b[first:last], a[first:last]], axis=1)
  changes = np.flatnonzero(np.any(coef[1:] != coef[:-1], axis=1)) + 1
  run_blocks = first + np.concatenate([[0], changes])  # first block of each run
  starts = run_blocks * block
  stops = np.minimum(np.append(run_blocks[1:], last) * block, n)
  # DF2T state before sample n0: z_k = sum_m (b[k+1+m] x[n0-1-m] - a[k+1+m] y[n0-1-m]).
  kk, mm = np.meshgrid(np.arange(order), np.arange(order), indexing='ij')
  idx = np.where(kk + 1 + mm <= order, kk + 1 + mm, order + 1)  # Hankel gather
  ha = ap[run_blocks][:, idx]  # [runs, order, order]
  x1 = np.where(starts >= 1, x[np.maximum(starts - 1, 0)], 0.0)  # x[n0 - 1]
  x2 = np.where(starts >= 2, x[np.maximum(starts - 2, 0)], 0.0)  # x[n0 - 2]
  zx = np.zeros((len(run_blocks), order))  # input part (b has 3 taps)
  zx[:, 0] = bp[run_blocks, 1] * x1 + bp[run_blocks, 2] * x2
  zx[:, 1] = bp[run_blocks, 2] * x1
  ypad = np.zeros(n + order)  # ypad[k + order] = y[k]
  for j, i in enumerate(run_blocks):
    n0, n1 = starts[j], stops[j]
    zi = zx[j] - ha[j] @ ypad[n0 : n0 + order][::-1]
    ypad[n0 + order : n1 + order] = lfilter(bp[i, :3], a[i], x[n0:n1], zi)
  return ypad[order:]


def lfilter(b, a, x, zi=None):
  """`scipy.signal.lfilter(b, a, x, zi=zi)[0]` (or without zi) for float64 1-D inputs."""
  if FAST_FILTER_OK:
    return _LINEAR_FILTER(b, a, x, -1) if zi is None else _LINEAR_FILTER(b, a, x, -1, zi)[0]
  return scipy.signal.lfilter(b, a, x) if zi is None else scipy.signal.lfilter(b, a, x, zi=zi)[0]


def check_fast_filter() -> bool:
  """True if scipy's private lfilter core behaves like `scipy.signal.lfilter` here."""
  if _LINEAR_FILTER is None:
    return False
  try:
    b, a = np.array([0.5, 0.2, 0.1]), np.array([1.0, -0.9, 0.2, 0.05])
    x, zi = np.linspace(-1.0, 1.0, 7), np.array([0.3, -0.1, 0.2])
    with_state = _LINEAR_FILTER(b, a, x, -1, zi)[0]
    without = _LINEAR_FILTER(b, a, x, -1)
    return bool(
      np.allclose(with_state, scipy.signal.lfilter(b, a, x, zi=zi)[0], rtol=1e-12)
      and np.allclose(without, scipy.signal.lfilter(b, a, x), rtol=1e-12)
    )
  except Exception:  # noqa: BLE001
    return False


FAST_FILTER_OK = check_fast_filter()
