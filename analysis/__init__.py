"""Read a study's runs and rank the measures (never imports torch or ray)."""
