"""Checkpoint files: TensorFlow-compatible tensor bundles, written atomically."""
from fastckpt.checkpoint.bundle import (
    BundleReader,
    atomic_write_file,
    bundle_exists,
    delete_bundle,
    recover_bundle,
    write_bundle,
)

__all__ = [
    "BundleReader",
    "atomic_write_file",
    "bundle_exists",
    "delete_bundle",
    "recover_bundle",
    "write_bundle",
]
