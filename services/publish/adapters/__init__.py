"""The publisher's adapters: PostGIS version store, notification outbox."""
