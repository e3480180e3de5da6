"""Define, run and measure a study of generalization measures (see ../shared/DESIGN.md)."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
