"""The local Apache Kafka launcher: jars from Maven Central, TLS material, one KRaft node."""
