"""Development tools: the dataset generator and the embedded servers of the demo, the
tests and the benchmark. Never imported by the engine's stages; the CLI imports them
lazily for `generate` and `demo`."""
