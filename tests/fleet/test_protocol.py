from __future__ import annotations

import orjson
import pytest

from corral.fleet.protocol import Envelope, ProtocolError, decode, encode, error_frame


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
