"""The accelerator core's units (``docs/isa.md``): scalar unit."""

from .scalar_unit import ScalarUnit

__all__ = ["ScalarUnit"]
