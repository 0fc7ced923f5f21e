"""`key_partition` against Kafka's own murmur2 test vectors (Apache Kafka `UtilsTest.testMurmur2`)."""

import pytest

from shredline.streams.kafka.produce import key_partition

# key -> Utils.murmur2(key) as the Java client computes it (a signed 32-bit int)
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "murmur2"), KAFKA_VECTORS.items())
@pytest.mark.parametrize("partitions", [1, 6, 7, 100])
def test_a_key_lands_where_the_java_client_puts_it(key: bytes, murmur2: int, partitions: int) -> None:
    # Utils.toPositive(murmur2(key)) % numPartitions, as BuiltInPartitioner.partitionForKey does
    assert key_partition(key, partitions) == (murmur2 & 0x7FFFFFFF) % partitions
