"""asv benchmarks of valarfast (run: `asv run --python=same --config benchmarks/asv.conf.json`)."""
