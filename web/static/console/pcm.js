// Audio helpers of the console: browser samples (float, any rate) to 16 kHz linear16 frames.

export const TARGET_RATE = 16000;
export const FRAME_SAMPLES = TARGET_RATE / 10; // 100 ms

// Downsamples a stream of Float32Array chunks from `inputRate` to `outputRate`. Each output sample is
// the mean of the input samples its period covers (a box low-pass against aliasing); the fractional
// position and the unused input carry over to the next chunk, so chunk boundaries leave no trace.
export class Downsampler {
  constructor(inputRate, outputRate = TARGET_RATE) {
    this.ratio = inputRate / outputRate;
    this.carry = new Float32Array(0);
    this.offset = 0;
  }

  push(chunk) {
    const input = new Float32Array(this.carry.length + chunk.length);
    input.set(this.carry);
    input.set(chunk, this.carry.length);
    const out = new Float32Array(Math.max(0, Math.floor((input.length - this.offset) / this.ratio) + 1));
    let count = 0;
    let t = this.offset;
    while (t + this.ratio <= input.length) {
      const first = Math.floor(t);
      const end = Math.max(first + 1, Math.floor(t + this.ratio));
      let sum = 0;
      for (let i = first; i < end; i++) sum += input[i];
      out[count++] = sum / (end - first);
      t += this.ratio;
    }
    const used = Math.min(Math.floor(t), input.length);
    this.carry = input.slice(used);
    this.offset = t - used;
    return out.subarray(0, count);
  }
}

// Float samples in [-1, 1] as signed 16-bit little-endian bytes (whatever the platform's byte order).
export function toLinear16(samples) {
  const view = new DataView(new ArrayBuffer(samples.length * 2));
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return view.buffer;
}

// Collects 16 kHz samples and hands out frames of FRAME_SAMPLES as linear16 buffers.
export class Framer {
  constructor(frameSamples = FRAME_SAMPLES) {
    this.frameSamples = frameSamples;
    this.pending = new Float32Array(0);
  }

  push(samples) {
    const all = new Float32Array(this.pending.length + samples.length);
    all.set(this.pending);
    all.set(samples, this.pending.length);
    const frames = [];
    let start = 0;
    for (; start + this.frameSamples <= all.length; start += this.frameSamples) {
      frames.push(toLinear16(all.subarray(start, start + this.frameSamples)));
    }
    this.pending = all.slice(start);
    return frames;
  }

  // What is left (shorter than a frame), as one last buffer, or null.
  flush() {
    const rest = this.pending;
    this.pending = new Float32Array(0);
    return rest.length ? toLinear16(rest) : null;
  }
}

// "mm:ss.s" for a time in seconds.
export function clock(seconds) {
  const tenths = Math.round(Math.max(0, seconds) * 10);
  const minutes = Math.floor(tenths / 600);
  const rest = tenths - minutes * 600;
  return `${String(minutes).padStart(2, "0")}:${String(Math.floor(rest / 10)).padStart(2, "0")}.${rest % 10}`;
}
