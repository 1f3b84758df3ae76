// @platformatic/kafka (speaks only the newest, flexible protocol versions) against kbroker:
// its Admin creates a 3-partition topic, its idempotent Producer writes N records, a
// Consumer in a group reads every one (Fetch by topic id) and commits, the Admin lists the
// group and its committed offsets, then a second consumer of the same group resumes from the
// committed offsets and sees only the M records written after. Every check exits non-zero.
// Usage: node platformatic.mjs <bootstrap> <topic> <n> <m>; prints "OK <n> <m>".
// The client is imported from $KBROKER_NODE_MODULES (ES modules ignore NODE_PATH).
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const modules = process.env.KBROKER_NODE_MODULES
const kafka = await import(pathToFileURL(join(modules, '@platformatic/kafka/dist/index.js')).href)
const { Admin, Producer, Consumer, stringSerializers, stringDeserializers } = kafka

const [bootstrap, topic, nText, mText] = process.argv.slice(2)
const n = parseInt(nText, 10)
const m = parseInt(mText, 10)
const brokers = [bootstrap]
const group = `pk-group-${topic}`

function check (ok, what) {
  if (!ok) {
    console.error(`FAILED: ${what}`)
    process.exit(1)
  }
}

async function produce (from, to) {
  const producer = new Producer({
    clientId: 'kbroker-platformatic', bootstrapBrokers: brokers, serializers: stringSerializers, idempotent: true
  })
  const messages = []
  for (let i = from; i < to; i++) messages.push({ topic, key: `k${i}`, value: `v${i}` })
  const result = await producer.send({ messages, acks: -1 })
  check(result.offsets.length > 0, `offsets of produced records: ${result.offsets.length}`)
  await producer.close()
}

// Reads until `expected` distinct values arrived, committing each; returns them.
async function consume (expected) {
  const consumer = new Consumer({
    groupId: group, clientId: 'kbroker-platformatic', bootstrapBrokers: brokers,
    deserializers: stringDeserializers, maxWaitTime: 500
  })
  const stream = await consumer.consume({ topics: [topic], mode: 'committed', fallbackMode: 'earliest', autocommit: false })
  const seen = new Set()
  for await (const message of stream) {
    seen.add(message.value)
    await message.commit()
    if (seen.size >= expected) break
  }
  await stream.close()
  await consumer.close()
  return seen
}

const admin = new Admin({ clientId: 'kbroker-platformatic', bootstrapBrokers: brokers })
const created = await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
check(created.length === 1 && created[0].name === topic && created[0].partitions === 3,
  `createTopics: ${JSON.stringify(created)}`)
const metadata = await admin.metadata({ topics: [topic] })
check(metadata.topics.get(topic)?.partitionsCount === 3, 'metadata lists 3 partitions')

await produce(0, n)
const first = await consume(n)
for (let i = 0; i < n; i++) check(first.has(`v${i}`), `first consumer saw v${i}`)

const groups = await admin.listGroups()
check(groups.has(group), `listGroups has ${group}: ${[...groups.keys()]}`)
const offsets = await admin.listConsumerGroupOffsets({ groups: [group] })
let committed = 0n
for (const t of offsets[0].topics) for (const p of t.partitions) committed += p.committedOffset
check(committed === BigInt(n), `committed offsets sum to ${n}: ${committed}`)

await produce(n, n + m)
const second = await consume(m)
for (let i = n; i < n + m; i++) check(second.has(`v${i}`), `second consumer saw v${i}`)
for (let i = 0; i < n; i++) check(!second.has(`v${i}`), `second consumer resumed past v${i}`)

await admin.deleteTopics({ topics: [topic] })
await admin.close()
console.log(`OK ${n} ${m}`)
