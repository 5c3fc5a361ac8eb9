"""One module per peer; each function runs inside a ``bench.child`` process, never in the runner."""
