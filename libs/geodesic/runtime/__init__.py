"""Service runtime: Kafka clients, HTTP endpoints, the consume-process-produce loop."""
