// AudioWorklet processor: microphone -> 16 kHz PCM16LE mono, in 20 ms frames ready to send.
//
// Runs at the AudioContext's rate (`sampleRate`, often 48 kHz). Above 16 kHz the signal is
// low-passed (4th-order Butterworth at 7 kHz, two biquads) and then linearly interpolated
// down to 16 kHz. Each finished frame is posted as an ArrayBuffer laid out as a protocol
// binary frame: the 0x01 audio tag followed by 320 little-endian int16 samples.

const OUT_RATE = 16000;
const FRAME = 320; // 20 ms at 16 kHz
const TAG_AUDIO = 0x01;

function lowpass(fc, q, fs) {
  // RBJ cookbook biquad, transposed direct form II
  const w = (2 * Math.PI * fc) / fs;
  const alpha = Math.sin(w) / (2 * q);
  const cos = Math.cos(w);
  const a0 = 1 + alpha;
  const b0 = (1 - cos) / 2 / a0;
  const b1 = (1 - cos) / a0;
  const a1 = (-2 * cos) / a0;
  const a2 = (1 - alpha) / a0;
  let z1 = 0;
  let z2 = 0;
  return (x) => {
    const y = b0 * x + z1;
    z1 = b1 * x - a1 * y + z2;
    z2 = b0 * x - a2 * y;
    return y;
  };
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.filters = this.step > 1 ? [lowpass(7000, 0.5412, sampleRate), lowpass(7000, 1.3066, sampleRate)] : [];
    this.t = 0; // position of the next output sample, in input samples from the current block's start
    this.prev = 0; // the previous block's last (filtered) sample, at position -1
    this.newFrame();
  }

  newFrame() {
    this.buf = new ArrayBuffer(1 + FRAME * 2);
    this.view = new DataView(this.buf);
    this.view.setUint8(0, TAG_AUDIO);
    this.n = 0;
    this.energy = 0;
  }

  push(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.view.setInt16(1 + this.n * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    this.energy += s * s;
    if (++this.n === FRAME) {
      const level = Math.sqrt(this.energy / FRAME);
      this.port.postMessage({ frame: this.buf, level }, [this.buf]);
      this.newFrame();
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || input.length === 0) return true;
    const n = input.length;
    let x = input;
    if (this.filters.length) {
      x = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        let v = input[i];
        for (const f of this.filters) v = f(v);
        x[i] = v;
      }
    }
    let t = this.t;
    while (t < n - 1) {
      const i = Math.floor(t);
      const frac = t - i;
      const a = i < 0 ? this.prev : x[i];
      const b = x[i + 1];
      this.push(a + (b - a) * frac);
      t += this.step;
    }
    this.t = t - n;
    this.prev = x[n - 1];
    return true;
  }
}

registerProcessor("jarvis-capture", CaptureProcessor);
