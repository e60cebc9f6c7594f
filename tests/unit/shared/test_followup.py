"""An STT job that carries its LLM plan (`SttJob.then`) starts the LLM job with the transcript,
and the typed hand-offs survive the codec."""

import msgpack

from shared import codec
from shared.messages import LlmJob, LlmPlan, SpokenReply, SttJob, followup, jobs_stream

HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _job(then: LlmPlan | None) -> SttJob:
    return SttJob("s1", 2, 7, b"\0\0", 16000, False, 1.0, then)


def test_the_plan_travels_typed():
    plan = LlmPlan("llm", HISTORY, {"k": 1}, [], SpokenReply("joe"))
    job = codec.decode(codec.encode(_job(plan)))
    assert isinstance(job.then, LlmPlan) and isinstance(job.then.speak, SpokenReply)
    assert job.then == plan


def test_the_transcript_becomes_the_last_user_message():
    job = codec.decode(codec.encode(_job(LlmPlan("llm", HISTORY, {"k": 1}))))
    stream, llm = followup(job, "what time is it", 1)
    assert stream == jobs_stream("llm")
    assert isinstance(llm, LlmJob) and (llm.sid, llm.turn, llm.epoch) == ("s1", 2, 7)
    assert llm.messages == [*HISTORY, {"role": "user", "content": "what time is it"}]
    assert llm.context == {"k": 1}
    assert llm.speak is None


def test_a_spoken_reply_asks_the_llm_worker_to_start_its_first_sentence():
    plan = LlmPlan("llm", [], {}, [], SpokenReply("joe"))
    _, llm = followup(codec.decode(codec.encode(_job(plan))), "hello", 1)
    assert codec.decode(codec.encode(llm)).speak == SpokenReply("joe")


def test_vision_parts_follow_the_words():
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    stream, llm = followup(_job(LlmPlan("vlm", [], {}, [image])), "what is this", 1)
    assert stream == jobs_stream("vlm")
    assert llm.messages == [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]


def test_no_words_or_no_plan_starts_nothing():
    assert followup(_job(LlmPlan("llm", [], {})), "", 1) is None
    assert followup(_job(None), "hello", 1) is None


def test_jobs_written_before_the_field_existed_still_decode():
    fields = msgpack.unpackb(codec.encode(_job(None)))[:-1]  # the seven-field form, no `then`
    assert codec.decode(msgpack.packb(fields, use_bin_type=True)).then is None
