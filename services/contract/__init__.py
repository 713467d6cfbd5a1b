"""The contract between odc's services: Avro wire format, message types and the dataset catalogue.

Pure: no Kafka, no database, no metrics. Every service imports from here and nowhere else for
anything that crosses a service boundary.
"""
