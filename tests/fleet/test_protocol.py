from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from corral.fleet.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_BATCH_EVENTS,
    Envelope,
    EventPayload,
    ProtocolError,
    batch_frames,
    decode,
    encode,
    error_frame,
    split_batch,
)


def _frame(**fields: object) -> str:
    base: dict[str, object] = {"v": 1, "type": "heartbeat", "id": "f1", "ts": 1700000000.0, "seq": None,
                               "payload": {}}
    base.update(fields)
    return orjson.dumps(base).decode()


def test_envelope_round_trips_with_all_fields() -> None:
    env = Envelope(type="event", seq=7, payload={"type": "usage", "session_id": "s", "data": {"model": "m"}})
    back = decode(encode(env))
    assert (back.type, back.seq, back.id, back.payload["data"]) == ("event", 7, env.id, {"model": "m"})
    assert set(orjson.loads(encode(env))) == {"v", "type", "id", "ts", "seq", "payload"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_envelope"),
        (_frame(v=2), "unsupported_version"),
        (_frame(type="teleport"), "unknown_type"),
        (_frame(id=""), "invalid_envelope"),
        (_frame(ts=0), "invalid_envelope"),
        (_frame(type="event", seq=None, payload={"type": "x"}), "invalid_envelope"),
        (_frame(type="event", seq=0, payload={"type": "x"}), "invalid_envelope"),
        (_frame(type="ack", payload={"seqs": "all"}), "invalid_payload"),
        (_frame(type="register", payload={}), "invalid_payload"),
        (_frame(payload=[1]), "invalid_payload"),
    ],
)
def test_invalid_frames_raise_a_protocol_error_with_a_stable_code(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(raw)
    assert caught.value.code == code


def test_frames_over_the_limit_are_rejected_before_parsing() -> None:
    big = _frame(payload={"pad": "x" * 5000})
    with pytest.raises(ProtocolError) as caught:
        decode(big, max_bytes=4096)
    assert caught.value.code == "frame_too_large"
    assert decode(big, max_bytes=8192).type == "heartbeat"


def test_error_frame_references_the_offending_frame() -> None:
    frame = error_frame("unknown_type", "nope", "abc")
    assert decode(encode(frame)).payload == {"code": "unknown_type", "message": "nope", "ref": "abc"}


# ---- events frames (several events in one frame) ----------------------------------


def _events(count: int, start: int = 1, text: str = "hello") -> list[tuple[int, str]]:
    return [(seq, encode(Envelope(type="event", seq=seq, payload={"type": "session.output", "session_id": "s1",
                                                                   "data": {"n": seq, "text": text}})))
            for seq in range(start, start + count)]


def _batch(entries: list[object], **fields: object) -> str:
    return _frame(type="events", payload={"events": entries}, **fields)


def test_an_events_frame_carries_the_event_frames_unchanged() -> None:
    pending = _events(3, text="héllo ✓")
    [(last, frame)] = batch_frames(pending, max_events=10, max_bytes=DEFAULT_MAX_FRAME_BYTES)
    assert last == 3
    outer = decode(frame)
    assert outer.type == "events" and outer.seq is None
    entries, errors = split_batch(outer)
    assert errors == []
    assert [(e.type, e.seq, e.id, e.ts, e.payload) for e in entries] == \
        [(e.type, e.seq, e.id, e.ts, e.payload) for e in (decode(f) for _, f in pending)]


def test_batches_keep_to_the_event_and_byte_limits_and_a_single_event_goes_alone() -> None:
    pending = _events(7)
    grouped = batch_frames(pending, max_events=3, max_bytes=DEFAULT_MAX_FRAME_BYTES)
    assert [last for last, _ in grouped] == [3, 6, 7]
    assert grouped[-1][1] == pending[-1][1]  # a group of one is the plain event frame
    assert [len(split_batch(decode(f))[0]) for _, f in grouped[:2]] == [3, 3]
    # max_events=1 (a supervisor without events frames): every event as it was stored
    assert batch_frames(pending, max_events=1, max_bytes=DEFAULT_MAX_FRAME_BYTES) == pending
    one = len(pending[0][1])
    limit = 1024
    by_bytes = batch_frames(pending, max_events=1000, max_bytes=limit)
    assert len(by_bytes) > 1 and all(len(f.encode()) <= limit for _, f in by_bytes)
    assert sum(len(split_batch(decode(f))[0]) if decode(f).type == "events" else 1 for _, f in by_bytes) == 7
    assert limit // one >= 3  # so the split above was by bytes, not by count
    # an event bigger than the limit on its own is still sent (and refused) alone, not dropped
    huge = _events(1, start=8, text="x" * 2000)
    assert batch_frames(pending[:1] + huge, max_events=1000, max_bytes=limit) == [pending[0], huge[0]]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"events": []}, "events: List should have at least 1 item"),
        ({"events": "all"}, "events: Input should be a valid list"),
        ({}, "events: Field required"),
    ],
)
def test_a_malformed_events_frame_is_refused_whole(payload: dict[str, object], problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(_frame(type="events", payload=payload))
    assert caught.value.code == "invalid_payload" and problem in caught.value.message
    assert caught.value.ref == "f1"


def test_an_events_frame_over_the_event_limit_is_refused_whole() -> None:
    entries = [orjson.loads(f) for _, f in _events(5)]
    with pytest.raises(ProtocolError) as caught:
        decode(_batch(entries), max_batch=4)
    assert caught.value.code == "batch_too_large" and "5 events exceeds the limit of 4" in caught.value.message
    assert len(split_batch(decode(_batch(entries), max_batch=5))[0]) == 5
    assert MAX_BATCH_EVENTS >= 100


def test_invalid_entries_are_named_and_the_valid_ones_kept() -> None:
    good = [orjson.loads(f) for _, f in _events(3)]
    bad_payload = {**good[1], "seq": 9, "id": "bad-payload", "payload": {"type": 5}}
    no_seq = {**good[1], "seq": None, "id": "no-seq"}
    nested = orjson.loads(_batch([good[0]], id="inner"))
    entries = [good[0], bad_payload, "not an object", good[1], no_seq, nested, good[2]]
    valid, errors = split_batch(decode(_batch(entries, id="outer")))
    assert [e.seq for e in valid] == [1, 2, 3]
    assert [(e.code, e.ref, e.message.split(":")[0]) for e in errors] == [
        ("invalid_payload", "bad-payload", "events[1] (seq 9)"),
        ("invalid_envelope", "outer", "events[2]"),
        ("invalid_envelope", "no-seq", "events[4]"),
        ("invalid_envelope", "inner", "events[5]"),
    ]
    assert errors[0].message == "events[1] (seq 9): event payload: type: Input should be a valid string"


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "x"},
        {"type": "x", "session_id": None, "project": None, "data": {}, "extra": [1]},
        {},
        {"type": ""},
        {"type": "x" * 101},
        {"type": None},
        {"type": 3},
        {"type": "x", "session_id": 7},
        {"type": "x", "project": ["p"]},
        {"type": "x", "data": [1]},
        {"type": "x", "data": None},
    ],
)
def test_the_hand_checked_event_payload_agrees_with_its_model(payload: dict[str, object]) -> None:
    try:
        EventPayload.model_validate(payload)
        model_ok = True
    except ValidationError:
        model_ok = False
    try:
        decode(_frame(type="event", seq=1, payload=payload))
        decode_ok = True
    except ProtocolError as exc:
        assert exc.code == "invalid_payload"
        decode_ok = False
    assert decode_ok == model_ok


def test_the_size_limit_counts_utf8_bytes_of_a_str_frame() -> None:
    frame = _frame(payload={"pad": "é" * 1000})  # ~1,080 characters, ~2,080 bytes
    assert len(frame) < 2048 < len(frame.encode())
    with pytest.raises(ProtocolError) as caught:
        decode(frame, max_bytes=2048)
    assert caught.value.code == "frame_too_large"
    assert decode(frame.encode(), max_bytes=4096).type == "heartbeat"
