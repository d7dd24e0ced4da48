"""Waits for asyncinfer's answers to requests, from Python.

    python consume.py [--group G] [--timeout S] [-X name=value ...] [REQUEST_ID ...]

Waits for the result of every REQUEST_ID (read from stdin, one a line, when
none is given) and prints each as one JSON line: request id, status (from
the asyncinfer-status header), and the outputs, the error or the original
request id. Exits 1 if some are still unanswered after the timeout.

    python produce.py order-1 order-2 order-1 | python consume.py
"""

import argparse
import json
import pathlib
import struct
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"


def prop(s):
    name, eq, value = s.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"{s!r} is not NAME=VALUE")
    return name, value


p = argparse.ArgumentParser(description="Wait for asyncinfer's results.")
p.add_argument("ids", nargs="*", metavar="REQUEST_ID", help="request ids [stdin]")
p.add_argument("--bootstrap", default="127.0.0.1:9092")
p.add_argument("--registry", default="http://127.0.0.1:8081")
p.add_argument("--topic", default="asyncinfer.results")
p.add_argument("--group", default="asyncinfer-python-example", help="this application's consumer group")
p.add_argument("--timeout", type=float, default=60, help="seconds to wait for every answer")
p.add_argument("-X", dest="config", metavar="NAME=VALUE", action="append", default=[], type=prop,
               help="a librdkafka property (security, SASL, …)")
args = p.parse_args()
args.config = dict(args.config)
waiting = set(args.ids or (line.strip() for line in sys.stdin if line.strip()))

# The elements of a tensor: the *_contents field its datatype names, or
# raw_contents, little-endian.
CONTENTS = {"FP32": ("fp32_contents", "f"), "FP64": ("fp64_contents", "d"), "INT32": ("int_contents", "i"),
            "INT64": ("int64_contents", "q"), "BOOL": ("bool_contents", "?")}


def elements(t):
    field, fmt = CONTENTS.get(t["datatype"], ("bytes_contents", None))
    if t["raw_contents"] is not None and fmt:
        return list(struct.unpack(f"<{len(t['raw_contents']) // struct.calcsize(fmt)}{fmt}", t["raw_contents"]))
    return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in t[field]]


# README: consumer
consumer = Consumer({
    "bootstrap.servers": args.bootstrap,
    # Only what committed transactions wrote: in exactly-once mode the
    # default, read_uncommitted, also shows answers that were rolled back.
    "isolation.level": "read_committed",
    # The group's committed offsets carry over from run to run; a new group
    # starts at the beginning, so no answer written before it joined is lost.
    "group.id": args.group,
    "auto.offset.reset": "earliest",
    **args.config,
})
registry = SchemaRegistryClient({"url": args.registry})
# Our result.avsc as the reader schema: fields a newer pipeline adds are
# dropped instead of surprising this code.
deserialize = AvroDeserializer(registry, (SCHEMAS / "result.avsc").read_text())
consumer.subscribe([args.topic])
deadline = time.monotonic() + args.timeout
while waiting and time.monotonic() < deadline:
    msg = consumer.poll(0.5)
    if msg is None:
        continue
    if msg.error():
        sys.exit(f"consume: {msg.error()}")
    # Results are keyed by request id: someone else's need not be decoded.
    request_id = (msg.key() or b"").decode(errors="replace")
    if request_id not in waiting:
        continue
    waiting.discard(request_id)
    status = dict(msg.headers() or [])["asyncinfer-status"].decode()
    result = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
    answer = {"request_id": request_id, "status": status}
    if status == "SUCCEEDED":
        answer["outputs"] = {t["name"]: elements(t) for t in result["outputs"]}
    elif status == "DUPLICATE":
        answer["original_request_id"] = result["original_request_id"]
    else:
        answer.update(reason=result["reason"], error_code=result["error_code"], error=result["error_message"])
    print(json.dumps(answer), flush=True)
consumer.close()  # commits the offsets read, and leaves the group at once
# README: end
if waiting:
    sys.exit(f"{len(waiting)} requests unanswered after {args.timeout:g}s: {' '.join(sorted(waiting))}")
