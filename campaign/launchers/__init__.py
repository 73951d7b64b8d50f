"""Launchers carry a planned campaign's trials out to workers (local, Slurm, Ray)."""
