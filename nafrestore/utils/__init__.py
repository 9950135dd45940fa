"""Small helpers shared across nafrestore (devices, seeding, mixed precision)."""
