"""Print {"sample_rate", "samples", "rms", "finite"} of a 16-bit mono WAV (sizes may be 0xFFFFFFFF: streamed)."""

import json
import math
import struct
import sys

with open(sys.argv[1], "rb") as f:
    data = f.read()
ok = data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[36:40] == b"data"
rate = struct.unpack("<I", data[24:28])[0] if ok else 0
pcm = data[44:] if ok else b""
n = len(pcm) // 2
samples = struct.unpack(f"<{n}h", pcm[: 2 * n]) if n else ()
rms = math.sqrt(sum(s * s for s in samples) / n) / 32768.0 if n else 0.0
print(json.dumps({"wav": ok, "sample_rate": rate, "samples": n, "rms": rms, "odd_bytes": len(pcm) % 2}))
