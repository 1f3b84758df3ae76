// KafkaJS as its users run it: its admin client creates a 3-partition topic and lists it,
// a producer writes N records, a consumer group reads them all (commits as it goes), the
// admin client reads the group's committed offsets and describes the group, then a second
// consumer of the same group resumes from the commits and sees only the M records written
// after. Usage: node kafkajs_group.js <bootstrap> <topic> <n> <m>; prints "OK <n> <m>".
const { Kafka, logLevel } = require("kafkajs");

async function produce(kafka, topic, from, to) {
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = from; i < to; i++) messages.push({ key: "k" + i, value: "v" + i });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();
}

// Reads with a group member until `want` distinct values arrived.
async function consume(kafka, topic, group, want) {
  const consumer = kafka.consumer({ groupId: group, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.size} of ${want}`)), 90000);
    consumer.run({
      autoCommitInterval: 100,
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size >= want) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await new Promise((r) => setTimeout(r, 1500)); // anything more arrives, commits land
  await consumer.disconnect();
  return seen;
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function main() {
  const [bootstrap, topic, nText, mText] = process.argv.slice(2);
  const n = parseInt(nText, 10), m = parseInt(mText, 10);
  const group = "kafkajs-group-" + topic;
  const kafka = new Kafka({ clientId: "kbroker-kafkajs", brokers: [bootstrap], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  check(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), "topic created");
  check((await admin.listTopics()).includes(topic), "listTopics lists the topic");

  await produce(kafka, topic, 0, n);
  const first = await consume(kafka, topic, group, n);
  check(first.size === n, `first consumer saw ${first.size} values, not ${n}`);
  for (let i = 0; i < n; i++) check(first.has("v" + i), `first consumer missed v${i}`);

  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const sum = offsets[0].partitions.reduce((s, p) => s + parseInt(p.offset, 10), 0);
  check(sum === n, `committed offsets sum to ${sum}, not ${n}`);
  const described = await admin.describeGroups([group]);
  check(described.groups[0].groupId === group && described.groups[0].protocolType === "consumer",
    `describeGroups: ${JSON.stringify(described.groups[0])}`);
  const ends = await admin.fetchTopicOffsets(topic);
  check(ends.reduce((s, p) => s + parseInt(p.high, 10), 0) === n, "fetchTopicOffsets high watermarks");

  await produce(kafka, topic, n, n + m);
  const second = await consume(kafka, topic, group, m);
  check(second.size === m, `second consumer saw ${second.size} values, not ${m} (did not resume)`);
  for (let i = n; i < n + m; i++) check(second.has("v" + i), `second consumer missed v${i}`);

  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(`OK ${n} ${m}`);
}

main().catch((e) => { console.log("FAIL " + e.message); process.exit(1); });
