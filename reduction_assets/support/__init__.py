"""Support shared by every layer above the science: the home, scratch space, checksums,
worker pools, progress bars, plots, provenance and product keys."""
