"""Backend workers: one process per LLM account; the only code that may talk to a provider."""
