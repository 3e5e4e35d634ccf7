"""Demo-only code for runs on a laptop or CI box: the built-in tiny model zoo, deterministic demo data sets,
and the `zoo://` / `demo://` URIs that name them. Nothing in the stages depends on this package."""
