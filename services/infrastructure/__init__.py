"""Adapters that several services share: database engine, Kafka topic provisioning and producer,
retry of transient failures, JSON logging. Edge code: the pure cores never import this."""
