"""The web client in a real headless Chromium whose microphone is a WAV file (looped by
Chromium): espeak-ng speech, then silence. Runs against the stub stack from conftest.

1. The page connects, streams the microphone, shows the transcript and the reply, plays the
   reply audio through its queue, and resumes the same session after a reload.
2. Barge-in: the looped speech comes back while the reply is still playing; the page gets
   `interrupted` and its playback stops at once (the queue is emptied, nothing left scheduled).
3. The other controls: push to talk (Space held), a typed message in the chat pipeline (no
   audio), and an uploaded image with a typed question in the vision pipeline, which reaches
   the (fake) VLM server byte for byte.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.speech import concat, have_espeak, silence, speak, write_wav

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
QUESTION = "What is the weather like in Paris today"


@pytest.fixture(scope="module")
def question_speech():
    if not have_espeak():
        pytest.skip("espeak-ng and sox are needed to make the fake microphone's speech")
    return speak(QUESTION)


def _fake_mic(tmp_path: Path, speech, pause_s: float) -> Path:
    return write_wav(tmp_path / f"mic-{pause_s:g}s.wav", concat(speech, silence(pause_s)))


async def _open_page(pw, chromium: str, args: list[str], url: str, mode: str = "vad"):
    browser = await pw.chromium.launch(executable_path=chromium, args=args)
    page = await browser.new_page(viewport={"width": 1000, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    await page.select_option("#mode", mode)
    await page.click("#connect")
    return browser, page, errors


async def _debug(page) -> str:
    state = await page.evaluate(
        "({state: jarvis.state, counts: jarvis.counts, player: jarvis.player, sent: jarvis.sent})"
    )
    return json.dumps(state)


async def test_page_transcribes_replies_and_plays_audio(
    playwright_chromium, chromium_args, question_speech, stub_stack, http_url, tmp_path
):
    from playwright.async_api import TimeoutError as PageTimeout
    from playwright.async_api import async_playwright

    wav = _fake_mic(tmp_path, question_speech, 8.0)  # a long pause: the reply plays to the end
    async with async_playwright() as pw:
        browser, page, errors = await _open_page(pw, playwright_chromium, chromium_args(wav), http_url)
        try:
            await page.wait_for_function("jarvis.ready && jarvis.state === 'LISTENING'", timeout=15000)
            # the whole turn: final transcript, streamed reply, metrics, and every queued sample played
            try:
                await page.wait_for_function(
                    """() => {
                        const p = jarvis.player;
                        return jarvis.counts.metrics >= 1 && jarvis.counts.audio_end >= 1
                            && p.scheduled > 0 && p.played === p.scheduled && !p.playing;
                    }""",
                    timeout=30000,
                )
            except PageTimeout:
                raise AssertionError(f"no complete spoken turn: {await _debug(page)}") from None

            user = await page.text_content(".turn[data-turn='1'] .msg.user .text")
            bot = await page.text_content(".turn[data-turn='1'] .msg.bot .text")
            metrics = await page.text_content(".turn[data-turn='1'] .metrics")
            assert user.startswith("I spoke for ") and user.endswith(" seconds."), user
            assert bot == f"You said: {user}.", bot
            assert "first audio" in metrics and "total" in metrics, metrics
            assert await page.evaluate("jarvis.counts.reply") > 2, "reply deltas stream in"
            assert await page.evaluate("jarvis.counts.transcript") >= 2, (
                "a partial before the final transcript"
            )
            player = await page.evaluate("jarvis.player")
            assert player["played"] > 0 and player["context"] == "running", player
            assert player["scheduled"] >= 16000, (
                "a second or more of reply audio (stub TTS: 60 ms a character)"
            )
            sent = await page.evaluate("jarvis.sent")
            assert sent["frames"] > 100, f"the microphone streams 20 ms frames: {sent}"
            await page.wait_for_function("jarvis.state === 'LISTENING'", timeout=10000)

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser.png"))

            # a reload resumes the same session (id and event cursor from localStorage)
            sid = await page.evaluate("jarvis.sessionId")
            await page.reload()
            await page.wait_for_function("jarvis.ready", timeout=15000)
            assert await page.evaluate("jarvis.sessionId") == sid
            assert "Resumed a conversation" in await page.text_content("#log")
            assert errors == [], errors
        finally:
            await browser.close()


async def test_speaking_over_the_reply_stops_playback_at_once(
    playwright_chromium, chromium_args, question_speech, stub_stack, http_url, tmp_path
):
    from playwright.async_api import TimeoutError as PageTimeout
    from playwright.async_api import async_playwright

    # a short pause: the looped question comes back while the reply is still playing
    wav = _fake_mic(tmp_path, question_speech, 2.0)
    async with async_playwright() as pw:
        browser, page, errors = await _open_page(pw, playwright_chromium, chromium_args(wav), http_url)
        try:
            try:
                await page.wait_for_function(
                    "jarvis.interrupts.some((i) => i.queuedBefore > 0)", timeout=40000, polling=100
                )
            except PageTimeout:
                raise AssertionError(f"no barge-in during playback: {await _debug(page)}") from None
            cut = await page.evaluate("jarvis.interrupts.find((i) => i.queuedBefore > 0)")
            # playback was under way, then everything still queued was dropped in the same task
            assert cut["playedBefore"] > 0, cut
            assert cut["queuedAfter"] == 0 and cut["sourcesAfter"] == 0, cut
            assert cut["accepting"] is False, "late audio of the interrupted turn is dropped"
            # the server agrees: the interrupted turn is marked, and the page went back to listening
            bubble = page.locator(f".turn[data-turn='{cut['turn']}'] .msg.bot")
            assert "interrupted" in (await bubble.get_attribute("class"))
            # (the state event follows the interrupt; it may still be on its way)
            try:
                await page.wait_for_function(
                    """() => { const t = jarvis.events.map((e) => e.type);
                               return t.indexOf("state", t.indexOf("interrupted")) > 0; }""",
                    timeout=10000,
                    polling=100,
                )
            except PageTimeout:
                types = await page.evaluate("jarvis.events.map((e) => e.type)")
                raise AssertionError(f"no state after the interrupt: {types}") from None
            assert errors == [], errors
        finally:
            await browser.close()


async def test_push_to_talk_typed_chat_and_image_upload(
    playwright_chromium, chromium_args, question_speech, stub_stack, http_url, fake_openai, make_png, tmp_path
):
    from playwright.async_api import TimeoutError as PageTimeout
    from playwright.async_api import async_playwright

    wav = _fake_mic(tmp_path, question_speech, 0.3)  # (nearly) always speaking: any held stretch has speech
    image = tmp_path / "square.png"
    image.write_bytes(make_png(rgb=(20, 200, 40)))
    async with async_playwright() as pw:
        browser, page, errors = await _open_page(
            pw, playwright_chromium, chromium_args(wav), http_url, mode="manual"
        )
        try:
            await page.wait_for_function("jarvis.ready && jarvis.state === 'LISTENING'", timeout=15000)
            assert await page.is_visible("#talk") and await page.is_enabled("#talk")

            # push to talk: hold Space while the fake mic speaks; only that stretch is a turn
            await page.keyboard.down("Space")
            assert await page.get_attribute("#talk", "aria-pressed") == "true"
            await page.wait_for_timeout(1800)
            await page.keyboard.up("Space")
            try:
                await page.wait_for_function("jarvis.counts.metrics >= 1", timeout=20000)
            except PageTimeout:
                raise AssertionError(f"no push-to-talk turn: {await _debug(page)}") from None
            user = await page.text_content(".turn[data-turn='1'] .msg.user .text")
            assert user.startswith("I spoke for "), user
            assert await page.evaluate("jarvis.counts.interrupted || 0") == 0, (
                "no VAD barge-in in push-to-talk"
            )

            # typed chat: the pipeline switch keeps the session; chat replies are not spoken
            audio_before = await page.evaluate("jarvis.counts.audio_start || 0")
            await page.select_option("#pipeline", "chat")
            await page.wait_for_function("jarvis.counts.ready >= 2", timeout=10000)
            assert not await page.is_checked("#speak")
            await page.fill("#text", "Hello from the keyboard")
            await page.press("#text", "Enter")
            await page.wait_for_function("jarvis.counts.metrics >= 2", timeout=20000)
            assert (
                await page.text_content(".turn[data-turn='2'] .msg.bot .text")
                == "You said: Hello from the keyboard."
            )
            assert await page.evaluate("jarvis.counts.audio_start || 0") == audio_before

            # an uploaded image switches to vision; the typed question goes with it to the VLM
            before = len(fake_openai.requests)
            await page.set_input_files("#upload", str(image))
            await page.wait_for_function(
                "jarvis.sent.images === 1 && jarvis.counts.ready >= 3", timeout=10000
            )
            assert await page.input_value("#pipeline") == "vision" and await page.is_visible("#thumb")
            await page.fill("#text", "What is in the picture")
            await page.click("#send")
            await page.wait_for_function("jarvis.counts.metrics >= 3", timeout=20000)
            assert await page.text_content(".turn[data-turn='3'] .msg.bot .text") == fake_openai.reply
            body = fake_openai.wait_for_request(before, count=before + 1)
            parts = body["messages"][-1]["content"]
            assert {"type": "text", "text": "What is in the picture"} in parts
            url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
            assert {"type": "image_url", "image_url": {"url": url}} in parts
            assert errors == [], errors
        finally:
            await browser.close()
