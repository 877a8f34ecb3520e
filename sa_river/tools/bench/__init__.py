"""``python -m sa_river bench``: the workloads and their ceilings are in :mod:`.workloads`."""
