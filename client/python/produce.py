"""Submits inference requests to asyncinfer from Python.

    python produce.py [--count N] [-X name=value ...] [KEY ...]

One request per KEY with that idempotency key (a repeated key is one
request: the repeat is answered DUPLICATE), and N requests without one.
Prints the request id of every request Kafka acknowledged, one a line, for
consume.py to wait for:

    python produce.py order-1 order-2 order-1 | python consume.py
"""

import argparse
import functools
import pathlib
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"


def prop(s):
    name, eq, value = s.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"{s!r} is not NAME=VALUE")
    return name, value


p = argparse.ArgumentParser(description="Submit inference requests to asyncinfer.")
p.add_argument("keys", nargs="*", metavar="KEY", help="idempotency keys, one request each")
p.add_argument("--count", type=int, help="requests without an idempotency key [1 without KEYs, else 0]")
p.add_argument("--bootstrap", default="127.0.0.1:9092")
p.add_argument("--registry", default="http://127.0.0.1:8081")
p.add_argument("--topic", default="asyncinfer.requests")
p.add_argument("--model", default="sim")
p.add_argument("-X", dest="config", metavar="NAME=VALUE", action="append", default=[], type=prop,
               help="a librdkafka property (security, SASL, …)")
args = p.parse_args()
args.config = dict(args.config)
if args.count is None:
    args.count = 0 if args.keys else 1

# README: producer
producer = Producer({
    "bootstrap.servers": args.bootstrap,
    # Kafka's default partitioner (Java's, franz-go's), which dedup relies
    # on; librdkafka's own default, consistent_random, puts keys elsewhere.
    "partitioner": "murmur2_random",
    # Retries never write a request twice, and a request counts as sent
    # only once every in-sync replica has it.
    "enable.idempotence": True,
    "acks": "all",
    **args.config,
})
registry = SchemaRegistryClient({"url": args.registry})
serialize = AvroSerializer(registry, (SCHEMAS / "request.avsc").read_text())
undelivered = []


def delivered(request_id, err, msg):
    # Called from poll() or flush() once Kafka has the request, or once the
    # producer gave up (message.timeout.ms). Then it may or may not have
    # arrived: send it again with the same request id, and dedup answers it
    # once either way.
    if err is not None:
        undelivered.append(request_id)
        print(f"{request_id} not delivered: {err}", file=sys.stderr)
    else:
        print(request_id, flush=True)


def submit(idempotency_key, inputs):
    request_id = str(uuid.uuid4())
    request = {
        "request_id": request_id,
        "idempotency_key": idempotency_key,  # None: the request id is the key
        "model": args.model,
        "inputs": inputs,
        "created_at_ms": int(time.time() * 1000),
    }
    producer.produce(
        args.topic,
        key=(idempotency_key or request_id).encode(),  # the key rule
        value=serialize(request, SerializationContext(args.topic, MessageField.VALUE)),
        on_delivery=functools.partial(delivered, request_id),
    )
    producer.poll(0)  # serves the delivery reports that are due


x = {"name": "x", "datatype": "FP32", "shape": [2], "fp32_contents": [1.0, 2.0]}
for key in args.keys + [None] * args.count:
    submit(key, [x])
producer.flush()  # every request gets its delivery report
if undelivered:
    sys.exit(f"{len(undelivered)} requests not delivered")
# README: end
