// Audio in and out: the microphone (an AudioWorklet posting 20 ms PCM16 frames at 16 kHz)
// and the reply player (AudioBufferSources scheduled back to back, flushed at once).

export const TAG_AUDIO = 0x01;
export const TAG_IMAGE = 0x02;

export class Mic {
  /** onFrame(ArrayBuffer frame, number level) gets each tagged 20 ms frame. */
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.ctx = null;
    this.stream = null;
    this.node = null;
    this.frames = 0;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    // The device's own rate: the worklet resamples (some browsers refuse a 16 kHz context on a 48 kHz mic).
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "jarvis-capture", { numberOfInputs: 1, numberOfOutputs: 0 });
    this.node.port.onmessage = (e) => {
      this.frames++;
      this.onFrame(e.data.frame, e.data.level);
    };
    source.connect(this.node);
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.node?.disconnect();
    this.ctx?.close();
    this.ctx = this.stream = this.node = null;
  }
}

export class Player {
  constructor() {
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    this.out = this.ctx.createGain();
    this.out.connect(this.ctx.destination);
    this.sources = new Set();
    this.rate = 16000;
    this.turn = null;
    this.accepting = false; // audio is only taken between `audio_start` and a flush
    this.started = false; // this turn's audio has begun (a later gap is an underrun)
    this.nextTime = 0; // context time where the next chunk starts
    this.lead = 0.05; // seconds of headroom when (re)starting; grows after an underrun
    this.stats = { chunks: 0, scheduled: 0, played: 0, dropped: 0, underruns: 0, flushes: 0, cut: 0 };
    this.onchange = () => {};
  }

  resume() {
    if (this.ctx.state === "suspended") return this.ctx.resume();
  }

  /** Hold playback where it is (the user started talking over the reply); audio that arrives
   * meanwhile stays queued behind it. `resume()` goes on from the same sample. */
  pause() {
    if (this.ctx.state === "running") return this.ctx.suspend();
  }

  /** A reply's audio begins: a new turn flushes whatever is left of the previous one. */
  begin(turn, rate) {
    if (turn !== this.turn) this.flush();
    this.turn = turn;
    this.rate = rate;
    this.accepting = true;
    this.started = false;
  }

  /** Queue one chunk of PCM16LE (a DataView over the bytes after the tag). */
  push(view) {
    const n = view.byteLength >> 1;
    if (!this.accepting || n === 0) {
      this.stats.dropped += n;
      return;
    }
    const pcm = new Float32Array(n);
    for (let i = 0; i < n; i++) pcm[i] = view.getInt16(i * 2, true) / 32768;
    const buffer = this.ctx.createBuffer(1, n, this.rate);
    buffer.copyToChannel(pcm, 0);
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.out);
    const now = this.ctx.currentTime;
    if (this.nextTime < now + 0.005) {
      if (this.started) {
        // the queue ran dry mid-reply: audio arrives late, keep more headroom
        this.stats.underruns++;
        this.lead = Math.min(0.3, this.lead * 1.5);
      }
      this.nextTime = now + this.lead;
    }
    this.started = true;
    src.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.sources.add(src);
    this.stats.chunks++;
    this.stats.scheduled += n;
    src.onended = () => {
      if (this.sources.delete(src)) this.stats.played += n;
      this.onchange();
    };
    this.onchange();
  }

  /** Stop now: every scheduled chunk is cut, the queue emptied, later audio dropped until a new turn. */
  flush() {
    this.accepting = false;
    if (this.sources.size) {
      this.stats.cut += Math.max(0, this.nextTime - this.ctx.currentTime);
      this.stats.flushes++;
    }
    for (const src of this.sources) {
      src.onended = null;
      try {
        src.stop();
      } catch {
        /* not started yet */
      }
      src.disconnect();
    }
    this.sources.clear();
    this.nextTime = 0;
    this.resume(); // a paused reply that is cut leaves the player ready for the next one
    this.onchange();
  }

  /** Seconds of reply audio still queued. */
  get queued() {
    return this.sources.size ? Math.max(0, this.nextTime - this.ctx.currentTime) : 0;
  }

  get playing() {
    return this.sources.size > 0;
  }

  close() {
    this.flush();
    this.ctx.close();
  }
}
