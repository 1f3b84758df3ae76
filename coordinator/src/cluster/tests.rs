//! Tests of the broker-side cluster operations against `LocalStore`.

use std::collections::BTreeMap;

use super::*;
use crate::layout::{Endpoint, ISR_CHANGE_NOTIFICATION_PATH};
use crate::local::LocalStore;
use crate::testutil::TempDir;

fn broker(id: i32, port: u16) -> BrokerRegistration {
    BrokerRegistration {
        id,
        endpoints: vec![Endpoint {
            listener_name: "PLAINTEXT".into(),
            security_protocol: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port,
        }],
        rack: None,
        timestamp_ms: 1,
    }
}

fn state(leader: i32, isr: &[i32]) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch: 0,
        isr: isr.to_vec(),
        controller_epoch: 1,
        zk_version: 0,
    }
}

fn assignment(partitions: &[(i32, &[i32])]) -> TopicAssignment {
    TopicAssignment {
        topic_id: [7; 16],
        partitions: partitions.iter().map(|(p, r)| (*p, r.to_vec())).collect(),
        ..TopicAssignment::default()
    }
}

fn config(pairs: &[(&str, &str)]) -> EntityConfig {
    EntityConfig {
        config: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn persistent_paths_are_created_idempotently() {
    let store = LocalStore::in_memory();
    ensure_persistent_paths(&store).unwrap();
    ensure_persistent_paths(&store).unwrap();
    for path in PERSISTENT_PATHS {
        assert!(store.exists(path).unwrap().is_some(), "{path}");
    }
    assert!(store
        .exists(ISR_CHANGE_NOTIFICATION_PATH)
        .unwrap()
        .is_some());
}

#[test]
fn cluster_id_is_created_once() {
    let store = LocalStore::in_memory();
    assert_eq!(read_cluster_id(&store).unwrap(), None);
    assert_eq!(
        ensure_cluster_id(&store, || "first".into()).unwrap(),
        "first"
    );
    let id = ensure_cluster_id(&store, || panic!("must not generate again")).unwrap();
    assert_eq!(id, "first");
    assert_eq!(
        store.get(CLUSTER_ID_PATH).unwrap().0,
        br#"{"version":"1","id":"first"}"#
    );
    // Another broker that lost the race gets the winner's id.
    let other = store.new_session();
    let raced = ensure_cluster_id(&other, || {
        "second".to_string() // generated but never stored
    });
    assert_eq!(raced.unwrap(), "first");
    store.set(CLUSTER_ID_PATH, b"{not json", None).unwrap();
    let e = read_cluster_id(&store).unwrap_err();
    assert!(e.to_string().contains("in znode /cluster/id"), "{e}");
}

#[test]
fn broker_registration_is_ephemeral_and_exclusive() {
    let store = LocalStore::in_memory();
    let broker_epoch = register_broker(&store, &broker(0, 9092)).unwrap();
    let (data, stat) = store.get("/brokers/ids/0").unwrap();
    assert_eq!(stat.ephemeral_owner, store.session_id());
    assert_eq!(stat.czxid, broker_epoch);
    assert_eq!(
        BrokerRegistration::from_json(0, &data).unwrap(),
        broker(0, 9092)
    );
    // A retry from the same session is fine.
    assert_eq!(
        register_broker(&store, &broker(0, 9092)).unwrap(),
        broker_epoch
    );

    let other = store.new_session();
    let e = register_broker(&other, &broker(0, 9093)).unwrap_err();
    assert!(matches!(
        e,
        StoreError::BrokerAlreadyRegistered { broker_id: 0 }
    ));
    assert!(
        e.to_string().starts_with("broker id 0 already registered"),
        "{e}"
    );
    register_broker(&other, &broker(1, 9093)).unwrap();
    assert_eq!(
        read_brokers(&store)
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [0, 1]
    );

    store.close_session();
    let new_epoch = register_broker(&other, &broker(0, 9093)).unwrap();
    assert!(new_epoch > broker_epoch);
    assert_eq!(read_brokers(&other).unwrap()[&0].endpoints[0].port, 9093);
}

#[test]
fn controller_election_bumps_the_epoch() {
    let first = LocalStore::in_memory();
    let second = first.new_session();
    assert_eq!(current_controller(&first).unwrap(), None);
    assert_eq!(elect_controller(&first, 1).unwrap(), Some(1));
    assert_eq!(first.get(CONTROLLER_EPOCH_PATH).unwrap().0, b"1");
    let (data, stat) = first.get(CONTROLLER_PATH).unwrap();
    assert_eq!(stat.ephemeral_owner, first.session_id());
    assert_eq!(ControllerZnode::from_json(&data).unwrap().broker_id, 1);
    assert_eq!(current_controller(&second).unwrap(), Some(1));

    assert_eq!(elect_controller(&second, 2).unwrap(), None);
    // A repeated election by the holder returns its epoch without bumping.
    assert_eq!(elect_controller(&first, 1).unwrap(), Some(1));

    first.close_session();
    assert_eq!(current_controller(&second).unwrap(), None);
    let won = elect_controller_at(&second, 2, 77).unwrap().unwrap();
    assert_eq!(won.epoch, 2);
    assert_eq!(
        read_controller_epoch(&second).unwrap(),
        Some(ControllerEpoch {
            epoch: 2,
            zk_version: won.zk_version
        })
    );
    assert_eq!(
        second.get(CONTROLLER_PATH).unwrap().0,
        br#"{"version":1,"brokerid":2,"timestamp":"77"}"#
    );

    let third = second.new_session();
    assert!(!resign_controller(&third).unwrap());
    assert!(resign_controller(&second).unwrap());
    assert_eq!(current_controller(&third).unwrap(), None);
    assert_eq!(elect_controller(&third, 3).unwrap(), Some(3));
}

#[test]
fn topic_creation_is_one_atomic_multi() {
    let store = LocalStore::in_memory();
    let topic_assignment = assignment(&[(0, &[0, 1]), (1, &[1, 0])]);
    let topic_config = config(&[("retention.ms", "1000")]);
    let states = [(0, state(0, &[0, 1])), (1, state(1, &[1, 0]))];
    create_topic(&store, "orders", &topic_assignment, &topic_config, &states).unwrap();

    let topic = store.get("/brokers/topics/orders").unwrap();
    assert_eq!(
        TopicAssignment::from_json(&topic.0).unwrap(),
        topic_assignment
    );
    assert_eq!(
        store.children("/brokers/topics/orders/partitions").unwrap(),
        ["0", "1"]
    );
    assert_eq!(
        store
            .children("/brokers/topics/orders/partitions/1")
            .unwrap(),
        ["state"]
    );
    assert_eq!(
        read_partition_state(&store, "orders", 1).unwrap(),
        Some(state(1, &[1, 0]))
    );
    assert_eq!(read_partition_state(&store, "orders", 2).unwrap(), None);
    // Every znode of the topic was created by the same transaction.
    let zxid = topic.1.czxid;
    for path in [
        "/config/topics/orders",
        "/brokers/topics/orders/partitions",
        "/brokers/topics/orders/partitions/0/state",
    ] {
        assert_eq!(store.exists(path).unwrap().unwrap().czxid, zxid, "{path}");
    }

    let other = config(&[("retention.ms", "5")]);
    let e = create_topic(&store, "orders", &topic_assignment, &other, &states).unwrap_err();
    assert!(
        matches!(e, StoreError::NodeExists(ref p) if p == "/brokers/topics/orders"),
        "{e}"
    );
    // The failed create changed nothing, not even the config.
    let topics = read_topics(&store).unwrap();
    assert_eq!(
        topics,
        BTreeMap::from([("orders".to_string(), (topic_assignment, topic_config))])
    );
}

#[test]
fn topic_creation_overwrites_a_leftover_config() {
    let store = LocalStore::in_memory();
    create_recursive(
        &store,
        "/config/topics/t",
        &config(&[("stale", "1")]).to_json(),
        CreateMode::Persistent,
    )
    .unwrap();
    let fresh = config(&[("cleanup.policy", "compact")]);
    create_topic(
        &store,
        "t",
        &assignment(&[(0, &[0])]),
        &fresh,
        &[(0, state(0, &[0]))],
    )
    .unwrap();
    assert_eq!(read_topic(&store, "t").unwrap().unwrap().1, fresh);
    assert_eq!(read_topic(&store, "absent").unwrap(), None);
}

#[test]
fn partition_state_writes_are_fenced_by_the_controller_epoch() {
    let store = LocalStore::in_memory();
    let epoch = elect_controller_at(&store, 0, 1).unwrap().unwrap();
    create_topic(
        &store,
        "t",
        &assignment(&[(0, &[0, 1])]),
        &EntityConfig::default(),
        &[(0, state(0, &[0, 1]))],
    )
    .unwrap();
    let mut current = read_partition_state(&store, "t", 0).unwrap().unwrap();
    current.isr = vec![0];
    current.leader_epoch = 1;
    let version = write_partition_state(&store, "t", 0, &current, Some(epoch.zk_version)).unwrap();
    assert_eq!(version, 1);
    let read = read_partition_state(&store, "t", 0).unwrap().unwrap();
    assert_eq!(
        (read.isr.as_slice(), read.leader_epoch, read.zk_version),
        (&[0][..], 1, 1)
    );

    // A stale partition version loses.
    let e = write_partition_state(&store, "t", 0, &current, None).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::BadVersion {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{e}"
    );

    // A newer controller bumps the epoch: the old one's writes are refused.
    let newer = store.new_session();
    store.close_session();
    let new_epoch = elect_controller_at(&newer, 1, 2).unwrap().unwrap();
    assert_eq!(new_epoch.epoch, 2);
    let mut stale = read.clone();
    stale.leader = 1;
    let e = write_partition_state(&newer, "t", 0, &stale, Some(epoch.zk_version)).unwrap_err();
    assert!(
        matches!(e, StoreError::BadVersion { ref path, .. } if path == CONTROLLER_EPOCH_PATH),
        "{e}"
    );
    assert_eq!(
        read_partition_state(&newer, "t", 0)
            .unwrap()
            .unwrap()
            .leader,
        0
    );
    write_partition_state(&newer, "t", 0, &stale, Some(new_epoch.zk_version)).unwrap();
    assert_eq!(
        read_partition_state(&newer, "t", 0)
            .unwrap()
            .unwrap()
            .leader,
        1
    );
    // -1 writes whatever the version.
    stale.zk_version = -1;
    assert_eq!(
        write_partition_state(&newer, "t", 0, &stale, None).unwrap(),
        3
    );
}

#[test]
fn adding_partitions_is_atomic() {
    let store = LocalStore::in_memory();
    let before = assignment(&[(0, &[0])]);
    create_topic(
        &store,
        "t",
        &before,
        &EntityConfig::default(),
        &[(0, state(0, &[0]))],
    )
    .unwrap();
    let after = assignment(&[(0, &[0]), (1, &[0]), (2, &[0])]);
    let new_states = [(1, state(0, &[0])), (2, state(0, &[0]))];
    add_partitions(&store, "t", &after, &new_states).unwrap();
    assert_eq!(read_topic(&store, "t").unwrap().unwrap().0, after);
    assert_eq!(
        store.children("/brokers/topics/t/partitions").unwrap(),
        ["0", "1", "2"]
    );
    assert!(read_partition_state(&store, "t", 2).unwrap().is_some());

    // Re-adding an existing partition fails whole: the assignment is unchanged.
    let bigger = assignment(&[(0, &[0]), (1, &[0]), (2, &[0]), (3, &[0])]);
    let e = add_partitions(
        &store,
        "t",
        &bigger,
        &[(2, state(0, &[0])), (3, state(0, &[0]))],
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::NodeExists(_)), "{e}");
    assert_eq!(read_topic(&store, "t").unwrap().unwrap().0, after);
    assert_eq!(read_partition_state(&store, "t", 3).unwrap(), None);

    let e = add_partitions(&store, "absent", &after, &new_states).unwrap_err();
    assert!(matches!(e, StoreError::NoNode(ref p) if p == "/brokers/topics/absent"));
}

#[test]
fn topic_deletion_marks_and_removes_every_znode() {
    let store = LocalStore::in_memory();
    for topic in ["a", "b"] {
        create_topic(
            &store,
            topic,
            &assignment(&[(0, &[0]), (1, &[0])]),
            &config(&[("k", "v")]),
            &[(0, state(0, &[0])), (1, state(0, &[0]))],
        )
        .unwrap();
    }
    assert_eq!(
        topics_marked_for_deletion(&store).unwrap(),
        Vec::<String>::new()
    );
    assert!(mark_topic_for_deletion(&store, "a").unwrap());
    assert!(!mark_topic_for_deletion(&store, "a").unwrap());
    assert_eq!(topics_marked_for_deletion(&store).unwrap(), ["a"]);
    delete_topic_znodes(&store, "a").unwrap();
    delete_topic_znodes(&store, "a").unwrap();
    for path in [
        "/brokers/topics/a",
        "/config/topics/a",
        "/admin/delete_topics/a",
    ] {
        assert_eq!(store.exists(path).unwrap(), None, "{path}");
    }
    assert_eq!(
        read_topics(&store).unwrap().keys().collect::<Vec<_>>(),
        ["b"]
    );
    assert!(store.exists("/admin/delete_topics").unwrap().is_some());
}

#[test]
fn consumer_offsets_use_the_0_8_text_format() {
    let store = LocalStore::in_memory();
    assert_eq!(read_consumer_offset(&store, "g", "t", 0).unwrap(), None);
    write_consumer_offset(&store, "g", "t", 0, 42).unwrap();
    write_consumer_offset(&store, "g", "t", 0, 43).unwrap();
    assert_eq!(read_consumer_offset(&store, "g", "t", 0).unwrap(), Some(43));
    assert_eq!(store.get("/consumers/g/offsets/t/0").unwrap().0, b"43");
    store.set("/consumers/g/offsets/t/0", b"x", None).unwrap();
    let e = read_consumer_offset(&store, "g", "t", 0).unwrap_err();
    assert!(e.to_string().contains("/consumers/g/offsets/t/0"), "{e}");
}

#[test]
fn a_restarted_single_node_keeps_topics_but_not_registrations() {
    let dir = TempDir::new("cluster-restart");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        ensure_persistent_paths(&store).unwrap();
        ensure_cluster_id(&store, || "cid".into()).unwrap();
        register_broker(&store, &broker(0, 9092)).unwrap();
        let epoch = elect_controller_at(&store, 0, 1).unwrap().unwrap();
        create_topic(
            &store,
            "t",
            &assignment(&[(0, &[0])]),
            &config(&[("segment.bytes", "1024")]),
            &[(0, state(0, &[0]))],
        )
        .unwrap();
        let mut changed = state(0, &[0]);
        changed.leader_epoch = 5;
        write_partition_state(&store, "t", 0, &changed, Some(epoch.zk_version)).unwrap();
        write_consumer_offset(&store, "g", "t", 0, 7).unwrap();
    }
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(ensure_cluster_id(&store, || "other".into()).unwrap(), "cid");
    assert!(read_brokers(&store).unwrap().is_empty());
    assert_eq!(current_controller(&store).unwrap(), None);
    let topics = read_topics(&store).unwrap();
    assert_eq!(topics["t"].1, config(&[("segment.bytes", "1024")]));
    let partition = read_partition_state(&store, "t", 0).unwrap().unwrap();
    assert_eq!((partition.leader_epoch, partition.zk_version), (5, 1));
    assert_eq!(read_consumer_offset(&store, "g", "t", 0).unwrap(), Some(7));
    // The restarted broker registers again and becomes controller with the next epoch.
    register_broker(&store, &broker(0, 9092)).unwrap();
    assert_eq!(elect_controller(&store, 0).unwrap(), Some(2));
}

#[test]
fn producer_id_blocks_are_claimed_in_order_across_brokers() {
    let store = LocalStore::in_memory();
    ensure_persistent_paths(&store).expect("paths");
    let a = allocate_producer_id_block(&store, 0).expect("first");
    assert_eq!((a.block_start, a.block_end), (0, 999));
    let b = allocate_producer_id_block(&store, 1).expect("second");
    assert_eq!((b.broker_id, b.block_start, b.block_end), (1, 1000, 1999));
    let (data, _) = store.get(PRODUCER_ID_BLOCK_PATH).expect("znode");
    assert_eq!(
        String::from_utf8(data).expect("utf8"),
        r#"{"version":1,"broker":1,"block_start":"1000","block_end":"1999"}"#
    );
    // exhaustion is an error, not an overflow
    let last = ProducerIdBlock {
        broker_id: 0,
        block_start: i64::MAX - 1500,
        block_end: i64::MAX - 500,
    };
    store
        .set(PRODUCER_ID_BLOCK_PATH, &last.to_json(), None)
        .expect("set");
    assert!(allocate_producer_id_block(&store, 0).is_err());
}
