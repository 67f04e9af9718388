"""Data-quality bit flags of the DQ extensions (0 = good), with the words that describe them."""

from enum import IntFlag


class DQ(IntFlag):
    """Bits of the DQ planes written by this project."""

    NO_DATA = 1
    LOW_COUNT = 2
    HOT = 4
    LOW_RESPONSE = 8
    HIGH_RESPONSE = 16
    SATURATED = 32
    BAD_PIXEL = 64
    COSMIC_RAY = 128


# The one description of each bit: FITS headers and documentation are generated from it.
MEANING = {
    DQ.NO_DATA: "no data (no usable input value, or not finite in the raw frame)",
    DQ.LOW_COUNT: "fewer than two values entered the master",
    DQ.HOT: "hot (dark current far above the master's typical level)",
    DQ.LOW_RESPONSE: "flat response below 0.5",
    DQ.HIGH_RESPONSE: "flat response above 1.5",
    DQ.SATURATED: "saturated in the raw frame",
    DQ.BAD_PIXEL: "in the instrument's bad-pixel mask",
    DQ.COSMIC_RAY: "cosmic-ray hit",
}


def describe_bits() -> str:
    """``"1 no data (...), 2 fewer than two ..., ..."``: every bit and its meaning, in bit order."""
    return ", ".join(f"{int(bit)} {MEANING[bit]}" for bit in DQ)
