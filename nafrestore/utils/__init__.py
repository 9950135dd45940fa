"""Small helpers shared across nafrestore: pixel scales, devices and precision, atomic files, the tile grid, the
``torchrun`` process group."""
