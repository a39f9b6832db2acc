#!/usr/bin/env python3
"""Writes the committed seed corpus of every fuzz target (fuzz/corpus/<target>):
one valid frame of every client message type in both encodings, plus the edge
classes the admission layer refuses. The first byte selects the frame kind (odd =
text) and, for message_admission, the depth limit. Run from the repository root."""
import hashlib
import json
import os
import struct

TS = 1700000000000
MESSAGES = {
    0x01: ("auth", {"token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}),
    0x10: ("subscribe", {"documentId": "doc-1"}),
    0x11: ("unsubscribe", {"documentId": "doc-1"}),
    0x12: ("sync_request", {"id": "r1", "documentId": "doc-1", "vectorClock": {"a": 1}}),
    0x14: ("sync_step1", {"documentId": "doc-1"}),
    0x20: ("delta", {"documentId": "doc-1", "field": "f", "value": {"a": [1, 2, {"b": None}]},
                     "clock": {"c1": 2}, "clientId": "c1", "messageId": "m1", "type": "set"}),
    0x21: ("ack", {"messageId": "m1"}),
    0x23: ("delta_batch_chunk", {"chunkId": "c", "totalChunks": 2, "chunkIndex": 0, "data": "eyJ0eXBl"}),
    0x30: ("ping", {}),
    0x31: ("pong", {}),
    0x40: ("awareness_update", {"documentId": "doc-1", "clientId": "c1", "state": {"cursor": 3}, "clock": 4}),
    0x41: ("awareness_subscribe", {"documentId": "doc-1"}),
    0x50: ("delta_batch", {"documentId": "doc-1", "messageId": "b1", "deltas": [
        {"type": "set", "field": "f", "value": 1, "clientId": "c1", "clock": {"c1": 3}},
        {"type": "text-state", "state": "{}", "timestamp": 5}]}),
    0x22: ("delta_batch", {"documentId": "doc-1", "deltas": [{"type": "delete", "field": "g"}]}),
}


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def seeds():
    out = []
    for code, (name, payload) in MESSAGES.items():
        body = compact(payload)
        out.append(bytes([0, code]) + struct.pack(">qI", TS, len(body)) + body)
        logical = dict(payload, type=name, timestamp=TS)
        out.append(bytes([1]) + compact(logical))
    out.append(bytes([1]) + b'{"type":"delta","documentId":"d","field":"f","value":'
               + b"[" * 40 + b"1" + b"]" * 40 + b"}")
    out.append(bytes([1]) + b'{"type":"delta","documentId":"d","delta":{"k\\u0000":"a\\u0000b"}}')
    out.append(bytes([1]) + b'{"type":"subscribe","id":"1","timestamp":2,"payload":{"type":"x","documentId":"d"}}')
    out.append(bytes([0, 0x30, 0, 0, 0]))
    return out


def node(client, clock):
    return {"client_id": client, "clock": clock, "offset": 0}


def block(client, clock, text, left=None, right=None, deleted=False):
    return [node(client, clock), {"id": node(client, clock), "text": text,
            "left_origin": left, "right_origin": right, "deleted": deleted}]


def state(blocks, clock, client):
    return compact({"blocks": blocks, "clock": {"value": clock}, "client_id": client})


def text_seeds():
    """Pairs of SyncText states (text_state target: NUL-separated), valid ones in
    the shape the SDK writes and the hostile classes the engine refuses."""
    hello = state([block("a", 5, "Hello")], 5, "a")
    split = state([block("a", 2, "He"), block("a", 4, "ll", deleted=True), block("a", 5, "o")], 5, "b")
    world = state([block("b", 5, "World", None, None),
                   block("b", 6, "!", node("b", 5), None)], 6, "b")
    inner = state([block("a", 5, "Hello"), block("c", 6, "é👍\r\n", node("a", 2), node("a", 3))], 6, "c")
    chain = state([block("t", k, "x", node("t", k - 1) if k > 1 else None) for k in range(1, 201)], 200, "t")
    cycle = state([block("p", 1, "P", node("x", 1)), block("r", 1, "R"), block("x", 1, "X", node("p", 1)),
                   block("z", 2, "Z", node("r", 1), node("x", 1))], 2, "evil")
    dangling = state([block("a", 1, "A", node("ghost", 3))], 1, "a")
    self_ref = state([block("a", 2, "AB", node("a", 1))], 2, "a")
    overlap = state([block("a", 3, "ABC"), block("a", 4, "DE")], 4, "a")
    huge = state([block("a", 2 ** 60, "A")], 1, "a")
    pairs = [(hello, split), (split, hello), (hello, world), (world, inner), (hello, inner),
             (chain, hello), (hello, cycle), (cycle, hello), (hello, dangling), (self_ref, hello),
             (overlap, world), (huge, hello), (hello, hello)]
    # The chain resent as SDK clients resend it (read by comparing bytes with what
    # the document wrote): one more character typed, one deleted, one forged.
    def typed(n, deleted=()):
        return [block("t", k, "x", node("t", k - 1) if k > 1 else None, None, k in deleted)
                for k in range(1, n + 1)]
    pairs += [(chain, state(typed(201), 201, "t")),
              (chain, state(typed(200, {50, 51}), 200, "t")),
              (chain, state(typed(200) + [block("t", 100, "x", node("t", 99))], 200, "t"))]
    return [a + b"\0" + b for a, b in pairs]


folder = os.path.join("fuzz", "corpus", "text_state")
os.makedirs(folder, exist_ok=True)
for seed in text_seeds():
    with open(os.path.join(folder, hashlib.sha1(seed).hexdigest()), "wb") as f:
        f.write(seed)

for target in ["frame_decoder", "message_admission"]:
    folder = os.path.join("fuzz", "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for seed in seeds():
        with open(os.path.join(folder, hashlib.sha1(seed).hexdigest()), "wb") as f:
            f.write(seed)
