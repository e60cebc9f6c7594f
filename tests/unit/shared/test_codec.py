from dataclasses import dataclass

import msgpack
import pytest

from shared import codec
from shared.messages import Audio, Command, LlmJob, TtsProgress


def test_audio_stays_raw_bytes():
    pcm = bytes(range(256)) * 4
    data = codec.encode(Audio(pcm, 1.5))
    assert pcm in data  # msgpack bin, not base64
    assert codec.decode(data) == Audio(pcm, 1.5)


def test_messages_round_trip():
    for msg in [
        Command({"type": "text", "text": "hi", "speak": None}, 2.0),
        LlmJob("s1", 3, 7, [{"role": "user", "content": "hi"}], {"name": "Ada"}, 1.0),
        TtsProgress(1, 2, 0, 1600, 16000, 1.0, True, 12.5, 2.0),
    ]:
        assert codec.from_entry(codec.entry(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [b"\xc1", msgpack.packb(["no-such-tag", 1]), msgpack.packb(["a"]), msgpack.packb(42), b""],
)
def test_garbage_raises_codec_error(data):
    with pytest.raises(codec.CodecError):
        codec.decode(data)


def test_tags_are_unique():
    @dataclass
    class Other:
        x: int

    with pytest.raises(ValueError):
        codec.message("a")(Other)
