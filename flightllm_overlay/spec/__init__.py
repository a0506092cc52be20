"""What the hardware is, read by every layer above and importing nothing of ours but config and errors.

- `isa`: the instruction formats (each field's meaning in the table), encode, decode, disassemble;
- `semantics`: what each instruction touches and how run-time parameters change it (footprint,
  dynamic modes, stripe channels), shared by the compiler, the simulator and the timing model;
- `arithmetic`: the device arithmetic (INT8 MACs, requantisation, exact exp and row sums);
- `wformat`: the packed weight format (N:16 blocks, 2/3/4/8-bit codes, the dequantisation unit).
- `counters`: what the counter registers count (`Counters`), behind every statistics view.
"""
