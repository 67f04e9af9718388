"""Raw frames offered to build_master in tests: from simulated files, or from arrays in memory."""

import numpy as np

from reduction_assets.fits.reading import image_shape, read_image, read_rows
from reduction_assets.reduction.masters import InputFrame, MasterSettings, build_master


class FileReader:
    """Frames whose key is a local file path."""

    def read(self, frame):
        return read_image(frame.key)[1]

    def read_rows(self, frame, first, stop):
        return read_rows(frame.key, first, stop)


class ArrayReader:
    """Frames held in memory: build_master needs no file at all."""

    def __init__(self, arrays):
        self.arrays = arrays

    def read(self, frame):
        return self.arrays[frame.key].astype(np.float32)

    def read_rows(self, frame, first, stop):
        return self.arrays[frame.key][first:stop].astype(np.float32)


def frame(path, checksum="0" * 64, exptime=0.0, date_obs="2026-11-20T06:00:00", **flags):
    return InputFrame(
        path.name if hasattr(path, "name") else str(path),
        str(path),
        checksum,
        exptime,
        date_obs,
        image_shape(path),
        (1, 1),
        **flags,
    )


def inputs(night, kind, filter_name=None):
    return [
        frame(path, exptime=truth.exptime, date_obs=truth.date_obs)
        for path, truth in zip(night.frames, night.truth.frames)
        if truth.frame_type == kind and (filter_name is None or truth.filter == filter_name)
    ]


def build(kind, frames, instrument, settings=None, **masters):
    return build_master(kind, frames, FileReader(), instrument, settings or MasterSettings(), **masters)
