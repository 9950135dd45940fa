"""nafrestore: train, evaluate and run NAFNet / LKA-NAFNet image restoration networks."""

__version__ = "0.1.0"
