"""Data-quality bit flags of the DQ extensions (0 = good)."""

from enum import IntFlag


class DQ(IntFlag):
    """Bits of the DQ planes written by this project."""

    NO_DATA = 1  # no input value was usable (all masked, invalid or rejected)
    LOW_COUNT = 2  # fewer than two values entered the master: no uncertainty could be measured
    HOT = 4  # dark current far above the master's typical level
    LOW_RESPONSE = 8  # flat response below 0.5
    HIGH_RESPONSE = 16  # flat response above 1.5
    SATURATED = 32  # at or above the instrument's saturation level
    BAD_PIXEL = 64  # in the instrument's bad-pixel mask
    COSMIC_RAY = 128  # a cosmic-ray hit
