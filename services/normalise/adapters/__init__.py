"""The normaliser's adapters: PostGIS store (unit of work), outbox relay to Kafka."""
