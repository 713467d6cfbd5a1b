"""Real-data acceptance: every programme-relevant file of the shared real-data folder through ``odc send``
on a throwaway stack, and docs/data-quality.md written from what the pipeline did with each record."""
