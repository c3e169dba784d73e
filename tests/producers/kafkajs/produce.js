// A producer at KafkaJS's defaults (its DefaultPartitioner: murmur2 as Java's client), as a
// Node service would write streamer's events: one "key<TAB>value[<TAB>reply_to<TAB>corr]"
// line from stdin per message, sent in order.
"use strict";
const readline = require("node:readline");
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic] = process.argv.slice(2);
  if (!bootstrap || !topic) {
    console.error("usage: node produce.js BOOTSTRAP TOPIC < lines");
    process.exit(2);
  }
  const kafka = new Kafka({ clientId: "streamer-kafkajs-test", brokers: bootstrap.split(","),
                            logLevel: logLevel.ERROR });
  const producer = kafka.producer();
  await producer.connect();
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    const [key, value, replyTo, corr] = line.split("\t");
    const message = { key, value };
    if (corr !== undefined) message.headers = { reply_to: replyTo, correlation_id: corr };
    const [meta] = await producer.send({ topic, messages: [message] });
    console.log(meta.partition);
  }
  await producer.disconnect();
}

main().catch((err) => { console.error(err); process.exit(1); });
