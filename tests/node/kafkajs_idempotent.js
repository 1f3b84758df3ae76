// KafkaJS's idempotent producer (idempotent: true, maxInFlightRequests: 1) against kbroker:
// produce N values to one partition, read them back, check each exactly once and in order.
// Usage: node kafkajs_idempotent.js <bootstrap> <topic> <records>; prints "OK <n>".
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, count] = process.argv.slice(2);
  const n = parseInt(count, 10);
  const kafka = new Kafka({ clientId: "kbroker-kafkajs", brokers: [bootstrap], logLevel: logLevel.WARN });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let i = 0; i < n; i += 50) {
    const messages = [];
    for (let j = i; j < Math.min(n, i + 50); j++) messages.push({ key: "k" + j, value: String(j) });
    await producer.send({ topic, acks: -1, messages: messages.map((m) => ({ ...m, partition: 0 })) });
  }
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: "kbroker-kafkajs-" + Date.now() });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${got.length} of ${n}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(parseInt(message.value.toString(), 10));
        if (got.length >= n) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.disconnect();
  for (let i = 0; i < n; i++) {
    if (got[i] !== i) throw new Error(`position ${i}: ${got[i]}`);
  }
  if (got.length !== n) throw new Error(`read ${got.length} records, want ${n}`);
  console.log("OK " + n);
}

main().catch((e) => { console.log("FAIL " + e.message); process.exit(1); });
