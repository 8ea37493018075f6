// AudioWorklet processor of the console: hands the microphone's samples (mono, the context's rate) to
// the page in chunks of 2048, a few per 100 ms, instead of one message per 128-sample render quantum.

const CHUNK = 2048;

class HarkCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Float32Array(CHUNK);
    this.length = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.buffer[this.length++] = sum / channels.length;
      if (this.length === CHUNK) {
        this.port.postMessage(this.buffer, [this.buffer.buffer]);
        this.buffer = new Float32Array(CHUNK);
        this.length = 0;
      }
    }
    return true;
  }
}

registerProcessor("hark-capture", HarkCapture);
