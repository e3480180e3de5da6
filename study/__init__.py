"""Define, run and measure a study of generalization measures: a grid of networks trained to
one training loss (`spec`, `data`, `models`, `train`), the measures computed on each
(`measures`), one Parquet row per network (`schema`, `storage`), fanned out with Ray
(`executor`, `jobs`), from the command line (`cli`)."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # of the run id: 2 names the network only; 1 also held the measures
MAX_POINTS = 100_000  # the most runs a grid may give unless allowed (`spec.check_size`)
