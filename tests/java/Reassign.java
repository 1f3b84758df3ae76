// Kafka's Admin client moving a partition (what kafka-reassign-partitions.sh --execute does
// through --bootstrap-server): alterPartitionReassignments, then listPartitionReassignments
// until the move is no longer listed. Also checks that cancelling a partition with no
// reassignment in progress answers NoReassignmentInProgressException.
// Usage: java -cp '.tools/java-lib/*' Reassign.java <bootstrap> <topic> <partition> <replicas, e.g. 2,3,4>
// Prints "LISTED <replicas> adding=<..> removing=<..>" while it runs and "OK" when done;
// exits 1 with a reason otherwise.

import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.NoReassignmentInProgressException;

public class Reassign {
    static void fail(String why) {
        System.out.println("FAIL " + why);
        System.exit(1);
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        TopicPartition tp = new TopicPartition(args[1], Integer.parseInt(args[2]));
        List<Integer> target = new ArrayList<>();
        for (String r : args[3].split(",")) target.add(Integer.parseInt(r));
        try (Admin admin = Admin.create(p)) {
            admin.alterPartitionReassignments(
                    Map.of(tp, Optional.of(new NewPartitionReassignment(target))))
                .all().get(60, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 120_000;
            boolean printed = false;
            while (true) {
                Map<TopicPartition, PartitionReassignment> ongoing =
                    admin.listPartitionReassignments(Set.of(tp)).reassignments().get(30, TimeUnit.SECONDS);
                PartitionReassignment r = ongoing.get(tp);
                if (r == null) break;
                if (!printed) {
                    System.out.println("LISTED " + r.replicas() + " adding=" + r.addingReplicas()
                        + " removing=" + r.removingReplicas());
                    printed = true;
                }
                if (System.currentTimeMillis() > deadline) fail("still reassigning: " + r);
                Thread.sleep(200);
            }
            try {
                admin.alterPartitionReassignments(Map.of(tp, Optional.empty()))
                    .all().get(30, TimeUnit.SECONDS);
                fail("cancelling with nothing in progress succeeded");
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof NoReassignmentInProgressException))
                    fail("cancel answered " + e.getCause());
            }
            System.out.println("OK");
        }
    }
}
