// The Java client 3.9 against kbroker with the newest protocol versions it speaks (Metadata
// v12, Fetch v17 by topic id, OffsetFetch v9, FindCoordinator v6, ListOffsets v9): the
// AdminClient creates a topic and describes the cluster, the default producer writes N
// records, a consumer group reads them all and commits, the AdminClient reads the group's
// committed offsets and the offset of the greatest timestamp (OffsetSpec.maxTimestamp), and a
// second consumer of the same group resumes from the commits and sees only the M records
// written after.
// Usage: java -cp '.tools/java-lib/*' ConsumerGroup.java <bootstrap> <topic> <n> <m>
// Prints "OK <n> <m>" on success; exits 1 with a reason otherwise.

import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class ConsumerGroup {
    static final int PARTITIONS = 3;

    static void fail(String why) {
        System.out.println("FAIL " + why);
        System.exit(1);
    }

    static void produce(String bootstrap, String topic, int from, int to, long timestampBase) throws Exception {
        Properties pc = new Properties();
        pc.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pc.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pc.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pc)) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = from; i < to; i++) {
                // Partition 0's record "v7" carries the greatest timestamp of that partition.
                long ts = (i == 7) ? timestampBase + 1_000_000 : timestampBase + i;
                sent.add(p.send(new ProducerRecord<>(topic, i % PARTITIONS, ts, "k" + i, "v" + i)));
            }
            p.flush();
            for (var f : sent) f.get(60, TimeUnit.SECONDS);
        }
    }

    static Set<String> consume(String bootstrap, String topic, String group, int expected) {
        Properties cc = new Properties();
        cc.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cc.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cc.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cc.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cc.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cc.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cc)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 90_000;
            while (seen.size() < expected && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) seen.add(r.value());
                c.commitSync();
            }
            // Whatever else is there arrives within a few more polls.
            for (int i = 0; i < 4; i++) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(250))) seen.add(r.value());
                c.commitSync();
            }
        }
        return seen;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int n = Integer.parseInt(args[2]), m = Integer.parseInt(args[3]);
        String group = "java-group-" + topic;
        long base = System.currentTimeMillis() - 3_600_000;
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
            var cluster = admin.describeCluster();
            if (cluster.nodes().get(30, TimeUnit.SECONDS).size() != 1) fail("describeCluster nodes");
            if (cluster.controller().get(30, TimeUnit.SECONDS) == null) fail("describeCluster controller");
            var described = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            if (described.topicId() == null || described.topicId().equals(org.apache.kafka.common.Uuid.ZERO_UUID))
                fail("the topic has no id: " + described);

            produce(bootstrap, topic, 0, n, base);
            Set<String> first = consume(bootstrap, topic, group, n);
            for (int i = 0; i < n; i++) if (!first.contains("v" + i)) fail("first consumer missed v" + i);
            if (first.size() != n) fail("first consumer saw " + first.size() + " values, not " + n);

            var committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            long sum = 0;
            for (var o : committed.values()) sum += o.offset();
            if (sum != n) fail("committed offsets sum to " + sum + ", not " + n + ": " + committed);

            TopicPartition p0 = new TopicPartition(topic, 0);
            var max = admin.listOffsets(Map.of(p0, OffsetSpec.maxTimestamp())).all().get(30, TimeUnit.SECONDS).get(p0);
            // Partition 0 holds v0, v3, v6, v9, ...: v7 is in partition 1, so the greatest
            // timestamp of partition 0 is that of its last record.
            long lastOfP0 = (n - 1) / PARTITIONS;
            if (max.offset() != lastOfP0) fail("maxTimestamp offset " + max.offset() + ", not " + lastOfP0);
            TopicPartition p1 = new TopicPartition(topic, 1);
            var max1 = admin.listOffsets(Map.of(p1, OffsetSpec.maxTimestamp())).all().get(30, TimeUnit.SECONDS).get(p1);
            // v7 is partition 1's third record (v1, v4, v7): offset 2, with its timestamp.
            if (max1.offset() != 2 || max1.timestamp() != base + 1_000_000)
                fail("partition 1 maxTimestamp " + max1.offset() + "@" + max1.timestamp());

            produce(bootstrap, topic, n, n + m, base);
            Set<String> second = consume(bootstrap, topic, group, m);
            for (int i = n; i < n + m; i++) if (!second.contains("v" + i)) fail("second consumer missed v" + i);
            if (second.size() != m) fail("second consumer saw " + second.size() + " values, not " + m + " (did not resume)");

            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
        }
        System.out.println("OK " + n + " " + m);
    }
}
