"""Reads asyncinfer's pressure signal, from Python.

    python pressure.py [--model M] [--wait S] [-X name=value ...]

Prints, as JSON lines, the latest admission verdict of every model and
priority lane (or of one model): its status, predicted wait, retry-after and
the fraction of requests to shed before producing. should_send() below is
the rule asyncinfer's Go client applies (client.Config.HonourPressure):

    python pressure.py --model resnet50
"""

import argparse
import json
import pathlib
import random
import time

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"


def prop(s):
    name, eq, value = s.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"{s!r} is not NAME=VALUE")
    return name, value


p = argparse.ArgumentParser(description="Read asyncinfer's pressure signal.")
p.add_argument("--bootstrap", default="127.0.0.1:9092")
p.add_argument("--registry", default="http://127.0.0.1:8081")
p.add_argument("--topic", default="asyncinfer.pressure")
p.add_argument("--model", help="only this model's lanes")
p.add_argument("--wait", type=float, default=10, help="seconds to wait for a verdict")
p.add_argument("-X", dest="config", metavar="NAME=VALUE", action="append", default=[], type=prop,
               help="a librdkafka property (security, SASL, …)")
args = p.parse_args()

# README: pressure
# The topic is compacted: the latest record of each key is the state. Read it
# whole, without a group (nothing to commit), read_committed.
consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "unused", "enable.auto.commit": False,
                     "isolation.level": "read_committed", **dict(args.config)})
deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}),
                               (SCHEMAS / "pressure.avsc").read_text())
consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
verdicts = {}  # (model, lane) -> the latest admission record


def read(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        if msg.value() is None:  # a tombstone retires a key
            continue
        rec = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        if rec["source"] == "admission":  # serving records are dedup's input
            verdicts[(rec["model"], rec["lane"])] = rec


def fresh(rec, now_ms):
    return now_ms - rec["at_ms"] <= 3 * (rec["interval_ms"] or 1000)


def lane_of(model, priority):
    # A request's lane: the first, from the highest min_priority down, that
    # its priority reaches; the lowest lane takes the rest.
    lanes = sorted((r for (m, _), r in verdicts.items() if m == model), key=lambda r: -r["min_priority"])
    return next((r for r in lanes if priority >= r["min_priority"]), lanes[-1] if lanes else None)


def should_send(model, priority=0, deadline_ms=0):
    """False (and the retry-after in ms) for a request the pipeline would reject now."""
    now_ms = time.time() * 1000
    rec = lane_of(model, priority)
    if rec is None or not fresh(rec, now_ms) or rec["status"] in ("PAUSED", "UNKNOWN"):
        return True, 0
    age = now_ms - rec["at_ms"]
    wait, retry = max(0, rec["predicted_wait_ms"] - age), max(1, rec["retry_after_ms"] - age)
    if rec["status"] == "SHEDDING" and random.random() < rec["shed_fraction"]:
        return False, retry
    if deadline_ms and deadline_ms - now_ms < wait:
        return False, retry
    return True, 0
# README: end


read(args.wait)
while args.model and not any(m == args.model for m, _ in verdicts) and args.wait > 0:
    read(1)
    args.wait -= 1
for (model, lane), rec in sorted(verdicts.items()):
    if args.model and model != args.model:
        continue
    send, retry = should_send(model, rec["min_priority"])
    print(json.dumps({k: rec[k] for k in ("model", "lane", "min_priority", "status", "predicted_wait_ms",
                                           "retry_after_ms", "shed_fraction", "at_ms")} | {"send": send}), flush=True)
consumer.close()
