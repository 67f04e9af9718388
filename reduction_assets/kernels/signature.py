"""Instrument-signature removal of a science frame in one pass over its pixels (numba).

The arithmetic is that of ``reduction_assets.reduction.calibrate``'s steps applied one after the
other in float32 (numpy's rounding at every step, no fused multiply-add), so the planes are those
steps' to the last bit; done pixel by pixel on numba threads instead of as some twenty whole-image
numpy expressions, each of which wrote a fresh 16 MB temporary at 2048^2 (on this kind of machine
faulting in new pages costs far more than the arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange


@dataclass(frozen=True)
class DQCarry:
    """Which bits of a master's DQ plane a frame takes: ``copy`` bits as they are, and
    ``merge_into`` wherever any of the ``merge`` bits is set."""

    copy: int = 0
    merge: int = 0
    merge_into: int = 0


@dataclass(frozen=True)
class MasterPlanes:
    """A master's planes as the pass reads them: data (e-, e-/s or 1), its error, its DQ and the
    DQ bits the frame takes from it."""

    data: np.ndarray
    error: np.ndarray
    dq: np.ndarray
    carry: DQCarry


@dataclass(frozen=True)
class Planes:
    """SCI (e-, 0 where there is no data), its variance (e-^2) and error (e-) and DQ of a frame."""

    sci: np.ndarray  # float32
    variance: np.ndarray  # float32
    err: np.ndarray  # float32
    dq: np.ndarray  # uint16


@njit(cache=True)
def _any_finite(raw: np.ndarray) -> bool:
    for value in raw.flat:  # noqa: SIM110 (a loop numba compiles; it stops at the first)
        if np.isfinite(value):
            return True
    return False


def any_finite(raw: np.ndarray) -> bool:
    """Whether any value of ``raw`` is finite (stops at the first)."""
    return bool(_any_finite(np.asarray(raw)))


@njit(cache=True, inline="always")
def _carried(dq, carry):
    copied = dq & carry[0]
    return copied | carry[2] if dq & carry[1] else copied


@njit(parallel=True, cache=True)
def _remove_signature(
    raw, rows, columns, levels, gain, read_var, saturation, bits, bad, use_bad,
    offset, offset_err, offset_dq, offset_carry, use_offset,
    dark, dark_err, dark_dq, dark_carry, use_dark, dark_scale, dark_is_rate,
    flat, flat_err, flat_dq, flat_carry, use_flat, min_flat,
    sci, variance, err, dq,
):  # fmt: skip
    no_data, saturated, bad_pixel = bits[0], bits[1], bits[2]
    ny, nx = sci.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for i in prange(ny):
        level = levels[rows[0] + i]
        for j in range(nx):
            value = raw[rows[0] + i, columns[0] + j]
            flags = np.uint16(0)
            if not np.isfinite(value):
                flags |= no_data
            if value >= saturation:
                flags |= saturated
            if use_bad and bad[i, j]:
                flags |= bad_pixel
            electrons = (value - level) * gain
            var = read_var
            if use_offset:
                electrons = electrons - offset[i, j]
                var += offset_err[i, j] * offset_err[i, j]
                flags |= _carried(offset_dq[i, j], offset_carry)
            if use_dark:
                if dark_is_rate:
                    electrons = electrons - dark[i, j] * dark_scale
                    scaled_err = dark_err[i, j] * dark_scale
                    var += scaled_err * scaled_err
                    # Poisson noise of the dark current removed above is part of the raw signal.
                    current = dark[i, j] * dark_scale
                    var += zero if current < zero else current
                flags |= _carried(dark_dq[i, j], dark_carry)
            var += zero if electrons < zero else electrons
            if use_flat:
                response = flat[i, j]
                good = np.isfinite(response) and response > min_flat
                if not good:
                    flags |= no_data
                flags |= _carried(flat_dq[i, j], flat_carry)
                safe = response if good else one
                value_e = electrons / safe
                response_err = flat_err[i, j] if good else zero
                term = value_e * response_err / safe
                var = var / (safe * safe) + term * term
            else:
                value_e = electrons
            if flags & no_data:
                value_e = zero
                var = read_var
            elif not np.isfinite(var):
                var = read_var
            sci[i, j] = value_e
            variance[i, j] = var
            err[i, j] = np.sqrt(var)
            dq[i, j] = flags


_NOTHING = np.zeros((1, 1), dtype=np.float32)
_NO_DQ = np.zeros((1, 1), dtype=np.uint16)
_NO_BAD = np.zeros((1, 1), dtype=np.bool_)
_NO_CARRY = np.zeros(3, dtype=np.uint16)


def _readonly(array: np.ndarray, dtype) -> np.ndarray:
    # One compiled version for masters in memory and masters mapped read-only from disk.
    view = np.ascontiguousarray(array, dtype=dtype).view()
    view.flags.writeable = False
    return view


def _master(planes: MasterPlanes | None) -> tuple:
    """The kernel's arguments for a master: data, error, DQ, carry and whether there is one."""
    if planes is None:
        return (_readonly(_NOTHING, np.float32),) * 2 + (_readonly(_NO_DQ, np.uint16), _NO_CARRY, False)
    return (
        _readonly(planes.data, np.float32),
        _readonly(planes.error, np.float32),
        _readonly(planes.dq, np.uint16),
        np.array([planes.carry.copy, planes.carry.merge, planes.carry.merge_into], dtype=np.uint16),
        True,
    )


def remove_signature(
    raw: np.ndarray,
    imaging: tuple[slice, slice],
    levels: np.ndarray | None,
    *,
    gain: float,
    read_noise: float,
    saturation: float,
    bits: tuple[int, int, int],
    bad_pixels: np.ndarray | None = None,
    offset: MasterPlanes | None = None,
    dark: MasterPlanes | None = None,
    dark_exptime: float | None = None,
    flat: MasterPlanes | None = None,
    min_flat: float = 0.05,
) -> Planes:
    """Calibrated electrons, variance and DQ of the ``imaging`` section of a raw frame (ADU).

    Per pixel, in float32: e = (raw - overscan level of the row) * ``gain``; minus ``offset`` (a
    bias, or a dark that includes the bias) whose error adds in quadrature; minus ``dark`` (e-/s)
    times ``dark_exptime`` (s) when that is given, with its scaled error and its current's Poisson
    variance; plus the Poisson variance of e (clipped at 0) over a read noise (e-) floor; divided by
    the ``flat`` where the flat is finite and above ``min_flat`` (the variance by the flat squared
    plus the flat's own error propagated). Pixels without data hold 0 and, like those whose variance
    is not finite, the read noise's variance. ``dark`` without ``dark_exptime`` only flags. ``bits``
    are the DQ bits for no data, saturation (raw ADU at or above ``saturation``) and bad pixels;
    each master's :class:`DQCarry` adds its own. ``levels`` has one value per raw row (None: no overscan).
    """
    raw = _readonly(raw, np.float32)
    rows, columns = (np.array(s.indices(n)[:2], dtype=np.int64) for s, n in zip(imaging, raw.shape))
    shape = (int(rows[1] - rows[0]), int(columns[1] - columns[0]))
    levels = _readonly(np.zeros(raw.shape[0]) if levels is None else levels, np.float32)
    if levels.shape != (raw.shape[0],):
        raise ValueError(f"{levels.size} overscan levels for {raw.shape[0]} rows")
    for name, planes in (("offset", offset), ("dark", dark), ("flat", flat)):
        if planes is not None and planes.data.shape != shape:
            raise ValueError(f"{name} has shape {planes.data.shape}, the imaging area {shape}")
    use_bad = bad_pixels is not None
    bad = _readonly(bad_pixels if use_bad else _NO_BAD, np.bool_)
    if use_bad and bad.shape != shape:
        raise ValueError(f"the bad-pixel mask has shape {bad.shape}, the imaging area {shape}")
    # Planes numpy allocates come faster here than numba's (numpy asks for huge pages).
    planes = Planes(*(np.empty(shape, dtype=np.float32) for _ in range(3)), np.empty(shape, dtype=np.uint16))
    _remove_signature(
        raw, rows, columns, levels, np.float32(gain), np.float32(read_noise**2), np.float32(saturation),
        np.array(bits, dtype=np.uint16), bad, use_bad,
        *_master(offset),
        *_master(dark), np.float32(dark_exptime or 0.0), dark_exptime is not None,
        *_master(flat), np.float32(min_flat),
        planes.sci, planes.variance, planes.err, planes.dq,
    )  # fmt: skip
    return planes
