"""FITS reading, header normalisation and validation of raw frames."""
