"""One module per workload; see ``base.py`` for the interface."""
