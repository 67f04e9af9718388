"""A realistic CCD night simulator, with truth, for demos, tests and benchmarks."""
