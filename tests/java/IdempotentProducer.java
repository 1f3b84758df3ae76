// The Java client's default producer (enable.idempotence=true, acks=all since 3.0) against
// kbroker: produce N records to every partition, read them back, check each value exactly
// once and in order, then describe the producers (KIP-664) through the admin client.
// Usage: java -cp '.tools/java-lib/*' IdempotentProducer.java <bootstrap> <topic> <records>
// Prints "OK <records> <producerId>" on success; exits 1 with a reason otherwise.

import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class IdempotentProducer {
    static void fail(String why) {
        System.out.println("FAIL " + why);
        System.exit(1);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int n = Integer.parseInt(args[2]);
        Properties pc = new Properties();
        pc.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pc.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pc.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pc.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        int partitions;
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            partitions = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                .get(topic).partitions().size();
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pc)) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int part = i % partitions;
                sent.add(p.send(new ProducerRecord<>(topic, part, "k" + i, part + ":" + i)));
            }
            p.flush();
            for (var f : sent) f.get(60, TimeUnit.SECONDS);
        }
        Properties cc = new Properties();
        cc.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cc.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cc.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cc.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        Map<Integer, List<Integer>> seen = new HashMap<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cc)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 60_000;
            int total = 0;
            while (total < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    String[] parts = r.value().split(":");
                    if (Integer.parseInt(parts[0]) != r.partition()) fail("value in the wrong partition: " + r.value());
                    seen.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(Integer.parseInt(parts[1]));
                    total++;
                }
            }
            if (total != n) fail("read " + total + " of " + n + " records");
        }
        for (var e : seen.entrySet()) {
            List<Integer> got = e.getValue();
            for (int i = 0; i < got.size(); i++) {
                int want = e.getKey() + i * partitions;
                if (got.get(i) != want) fail("partition " + e.getKey() + " position " + i + ": " + got.get(i) + " != " + want);
            }
        }
        long producerId;
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            var described = admin.describeProducers(List.of(new TopicPartition(topic, 0))).all().get(30, TimeUnit.SECONDS);
            var states = described.get(new TopicPartition(topic, 0)).activeProducers();
            if (states.size() != 1) fail("describeProducers listed " + states.size() + " producers");
            var s = states.get(0);
            int perPartition = (n + partitions - 1) / partitions;
            if (s.lastSequence() != perPartition - 1) fail("last sequence " + s.lastSequence() + " != " + (perPartition - 1));
            producerId = s.producerId();
        }
        System.out.println("OK " + n + " " + producerId);
    }
}
