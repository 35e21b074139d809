"""A plain per-token INT4 min/max quantizer: the reference point for Oaken's area and Fmax.

This is what a KV-cache quantizer without outlier handling costs (QServe KV4 / Atom style:
one asymmetric 4-bit grid per token vector, no groups, no thresholds, no sparse list). It is
built with the same stream conventions and the same exact arithmetic style as the Oaken
engine, so that ``oaken-hw synth`` can put the two side by side at the same ``lanes``.

Numerics (the golden model :func:`int4_golden` defines them; the RTL matches bit for bit)
------------------------------------------------------------------------------------------
1. **FP16 to fixed point, exactly.** Every finite FP16 value is an integer multiple of
   2^-24 (the smallest subnormal), and ``|x| <= 65504 < 2^16``, so ``X = x * 2^24`` is an
   exact signed integer of 41 bits: subnormal ``X = mant``, normal
   ``X = (1024 + mant) << (exp - 1)``. ``+-0`` give 0. Bad input has a fixed meaning:
   ``+-inf`` saturate to ``+-65504``, every NaN reads as 0.
2. **Per-vector range.** ``lo = min(X)``, ``span = max(X) - lo`` (``0 <= span < 2^41``)
   over one vector of ``vector_len`` elements.
3. **Code.** ``q = min(15, floor(16 * (X - lo) / span))``, and ``q = 0`` when
   ``span == 0``. The RTL computes the floor exactly with a 4-step restoring division
   (``r <- 2r; if r >= span: r -= span, bit = 1``), one pipeline stage per step; no
   reciprocal, no rounding mode. Because ``X - lo <= span`` the remainder never exceeds
   ``span``, and ``X == max`` runs through four "subtract" steps to 15, so the clamp is
   free. Dequantization (not built here) is ``x ~ (lo + (q + 1/2) * span / 16) * 2^-24``.
4. **Metadata** travels with every output beat as exact integers: ``lo`` (signed 41 bits)
   and ``span`` (unsigned 41 bits), in units of 2^-24. A memory-side format would narrow
   them to FP16; that conversion is the same for Oaken and is left out of both.

Micro-architecture
------------------
A vector is needed twice (min/max first, then quantize), so input beats are written to a
three-bank buffer (:class:`amaranth.lib.memory.Memory` of raw FP16 words, one bank per
vector) while a reduction pipeline finds the range. The reduction compares 16-bit
order-preserving keys of the FP16 patterns (``bits ^ 0x8000`` for positive values,
``~bits`` for negative ones, after the inf/NaN rule), not 41-bit fixed point: a
``log2(lanes)``-level min/max tree and a running accumulator, then only the two winners
are converted to fixed point, once per vector. When a bank's range is known the read
pipeline streams it out again: block-RAM read, a register, FP16 -> magnitude in two shifter stages,
``x - lo`` in one carry chain, four division stages (``latency`` = 9 register stages).
Three banks (rather than two) let the writer fill one bank while another waits for its
reduction and a third is being read, so the block takes one beat per cycle as long as
``vector_len // lanes >= reduction_latency - 1`` (the default 16 lanes x 192 elements:
12 beats against 9); shorter vectors stall the input now and then. The read pipeline
never stalls: it runs into an output FIFO of ``fifo_depth`` beats and a beat is issued only
when a credit says the FIFO will have room for it, so ``o.ready`` drives no clock enable
(a whole-pipeline stall, ``advance = ~o.valid | o.ready``, put it on ~6000 enables at 16
lanes and held ECP5-85 at ~100 MHz).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["Int4Quantizer", "fp16_to_fixed", "int4_golden", "FIXED_BITS", "INF_FIXED"]

#: Width of the signed fixed-point image of an FP16 value (units of 2^-24).
FIXED_BITS = 41
#: Fixed-point image of +65504, which +inf saturates to.
INF_FIXED = 65504 << 24
#: Code width.
CODE_BITS = 4


# -- golden model ------------------------------------------------------------------------------

def fp16_to_fixed(bits):
    """Exact image ``x * 2^24`` of FP16 bit patterns, as ``int64`` (see the module numerics).

    Parameters
    ----------
    bits : array_like of uint16
        FP16 bit patterns.
    """
    b = np.asarray(bits, dtype=np.uint16).astype(np.int64)
    sign, exp, man = b >> 15, (b >> 10) & 0x1F, b & 0x3FF
    mag = np.where(exp == 0, man, (man | 0x400) << np.maximum(exp - 1, 0))
    mag = np.where(exp == 31, np.where(man == 0, INF_FIXED, 0), mag)
    return np.where(sign == 1, -mag, mag)


def int4_golden(bits, vector_len):
    """Golden model of :class:`Int4Quantizer`.

    Parameters
    ----------
    bits : array_like of uint16
        FP16 bit patterns, a whole number of vectors (flattened in stream order).
    vector_len : int
        Elements per quantization vector.

    Returns
    -------
    codes : ndarray of uint8, shape (n_vectors, vector_len)
    lo : ndarray of int64, shape (n_vectors,)
        Vector minimum in units of 2^-24.
    span : ndarray of int64, shape (n_vectors,)
        Vector maximum minus minimum in units of 2^-24.
    """
    x = fp16_to_fixed(bits).reshape(-1, vector_len)
    lo = x.min(axis=1)
    span = x.max(axis=1) - lo
    d = x - lo[:, None]
    safe = np.where(span == 0, 1, span)[:, None]
    q = np.minimum(15, (d << CODE_BITS) // safe)
    q = np.where(span[:, None] == 0, 0, q)
    return q.astype(np.uint8), lo, span


# -- RTL ---------------------------------------------------------------------------------------

def _canon(bits):
    """Bad input made ordinary: +-inf -> +-65504, NaN -> +0 (the golden model's rule)."""
    exp, man, sign = bits[10:15], bits[0:10], bits[15]
    return Mux(exp == 31, Mux(man == 0, Cat(Const(0x7BFF, 15), sign), 0), bits)


def _key(bits):
    """Unsigned key whose order is the FP16 value order (for canonical bits; -0 < +0)."""
    return bits ^ Mux(bits[15], 0xFFFF, 0x8000)


def _unkey(key):
    return Mux(key[15], key ^ 0x8000, ~key)[0:16]


def _shift_parts(bits):
    """``(significand, shift)`` with ``|x| * 2^24 == (significand << shift) >> 1``.

    Shifting by ``max(exp, 1)`` and dropping one bit, instead of by ``exp - 1``, keeps the
    decrement off the path into the shifter.
    """
    man, exp = bits[0:10], bits[10:15]
    sig = Cat(man, exp != 0)
    return sig, Cat(exp[0] | (exp == 0), exp[1:5])


def _magnitude(bits):
    """``(sign, |x| * 2^24)`` of canonical FP16 bits; the magnitude has 40 bits."""
    sig, shift = _shift_parts(bits)
    return bits[15], (sig << shift)[1:FIXED_BITS]


class Int4Quantizer(wiring.Component):
    """Per-vector INT4 min/max quantizer over an FP16 stream, ``lanes`` elements per beat.

    Vectors are framed by count: every ``vector_len // lanes`` input beats form one vector;
    the output carries the same number of beats with ``last`` set on the final one.

    Parameters
    ----------
    lanes : int
        FP16 elements per beat (a power of two).
    vector_len : int
        Elements per quantization vector (a multiple of ``lanes``).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(unsigned(16), lanes)))
        FP16 bit patterns, element ``k`` of the beat in lane ``k``.
    o : Out(stream.Signature(StructLayout))
        ``codes`` (``lanes`` x unsigned(4)), ``lo`` (signed(41)), ``span`` (unsigned(41)),
        ``last`` (1 on a vector's final beat).
    beats_per_vector : int
    reduction_latency : int
        Cycles from a vector's last input beat to the start of its read-out.
    latency : int
        Register stages of the read pipeline (read issue to the output FIFO).
    fifo_depth : int
        Beats of the output FIFO (and credits of the read pipeline).
    """

    def __init__(self, *, lanes, vector_len):
        # an object that failed to build is not an "unused elaboratable" worth a warning
        if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1):
            self._MustUse__silence = True
            raise ValueError(f"lanes must be a power of two, not {lanes!r}")
        if not isinstance(vector_len, int) or vector_len < lanes or vector_len % lanes:
            self._MustUse__silence = True
            raise ValueError(f"vector_len must be a positive multiple of lanes ({lanes}), "
                             f"not {vector_len!r}")
        self.lanes = lanes
        self.vector_len = vector_len
        self.beats_per_vector = vector_len // lanes
        self.tree_levels = lanes.bit_length() - 1
        # write beat, keys, tree levels, accumulator, key -> magnitude, sign -> range flag
        self.reduction_latency = 2 + self.tree_levels + 3
        # issue, memory data, its register, shift, shift, subtract, 4 division steps
        self.latency = 5 + CODE_BITS
        # credits: enough for the round trip issue -> FIFO -> o, so that a ready sink
        # sees one beat per cycle
        self.fifo_depth = self.latency + 3
        self.out_layout = data.StructLayout({
            "codes": data.ArrayLayout(unsigned(CODE_BITS), lanes),
            "lo": signed(FIXED_BITS),
            "span": unsigned(FIXED_BITS),
            "last": unsigned(1),
        })
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(16), lanes))),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, n = self.lanes, self.beats_per_vector
        banks = 3
        cnt_bits = max(1, (n - 1).bit_length())
        beat_layout = data.ArrayLayout(unsigned(16), lanes)

        def reg(shape, name):
            # datapath registers need no reset: only the valid bits and the control do
            return Signal(shape, name=name, reset_less=True)

        # block RAM even where the buffer is shallow: a 256-bit LUTRAM spreads over the
        # chip and its address/write-enable fan-out set the Fmax (measured on ECP5)
        m.submodules.buf = buf = Memory(shape=unsigned(16 * lanes),
                                        depth=banks << cnt_bits, init=[],
                                        attrs={"ram_style": "block"})
        wp = buf.write_port()
        rp = buf.read_port(transparent_for=())

        # bank states: written (writer done, not yet fully read), reduced (range known)
        written = Signal(banks)
        reduced = Signal(banks)
        lo = [reg(signed(FIXED_BITS), f"lo{b}") for b in range(banks)]
        hi = [reg(signed(FIXED_BITS), f"hi{b}") for b in range(banks)]

        def next_bank(sel):
            return Mux(sel == banks - 1, 0, sel + 1)

        # -- writer ---------------------------------------------------------------------------
        wsel = Signal(2)
        wcnt = Signal(cnt_bits)
        w_last = wcnt == n - 1
        accept = self.i.valid & self.i.ready
        m.d.comb += [
            self.i.ready.eq(~written.bit_select(wsel, 1)),
        ]
        with m.If(accept):
            m.d.sync += wcnt.eq(Mux(w_last, 0, wcnt + 1))
            with m.If(w_last):
                m.d.sync += wsel.eq(next_bank(wsel))

        # -- reduction pipeline (never stalls; bubbles are valid=0) ----------------------------
        # min/max run on 16-bit order-preserving keys of the FP16 patterns, not on 41-bit
        # fixed point: only the two winners are converted, once per vector
        def stage(prev, tag):
            cur = (Signal(name=f"{tag}_valid"), reg(1, f"{tag}_first"),
                   reg(1, f"{tag}_last"), reg(2, f"{tag}_bank"))
            m.d.sync += [c.eq(p) for c, p in zip(cur, prev)]
            return cur

        r_beat = reg(beat_layout, "r_beat")
        r_addr = reg(len(wp.addr), "r_addr")
        m.d.sync += [r_beat.eq(self.i.payload), r_addr.eq(Cat(wcnt, wsel))]
        ctl = stage((accept, wcnt == 0, w_last, wsel), "r")
        # the buffer is written from registers, one cycle after the transfer
        m.d.comb += [wp.addr.eq(r_addr), wp.data.eq(r_beat.as_value()), wp.en.eq(ctl[0])]
        ctl = stage(ctl, "k")
        keys = [reg(16, f"k_key{k}") for k in range(lanes)]
        m.d.sync += [keys[k].eq(_key(_canon(r_beat[k]))) for k in range(lanes)]
        mins = maxs = keys
        for lvl in range(self.tree_levels):
            ctl = stage(ctl, f"t{lvl}")
            nmins = [reg(16, f"t{lvl}_min{k}") for k in range(len(mins) // 2)]
            nmaxs = [reg(16, f"t{lvl}_max{k}") for k in range(len(mins) // 2)]
            for k in range(len(nmins)):
                a, b = mins[2 * k], mins[2 * k + 1]
                c, d = maxs[2 * k], maxs[2 * k + 1]
                m.d.sync += [nmins[k].eq(Mux(b < a, b, a)), nmaxs[k].eq(Mux(d > c, d, c))]
            mins, maxs = nmins, nmaxs
        a_valid, a_first, a_last, a_bank = ctl
        acc_lo, acc_hi = reg(16, "acc_lo"), reg(16, "acc_hi")
        new_lo = Mux(a_first | (mins[0] < acc_lo), mins[0], acc_lo)
        new_hi = Mux(a_first | (maxs[0] > acc_hi), maxs[0], acc_hi)
        # finishing a vector: keys back to FP16, then magnitude, then sign (3 stages)
        f1_valid, f1_bank = Signal(), reg(2, "f1_bank")
        f1_lo, f1_hi = reg(16, "f1_lo"), reg(16, "f1_hi")
        m.d.sync += [f1_valid.eq(a_valid & a_last), f1_bank.eq(a_bank),
                     f1_lo.eq(_unkey(new_lo)), f1_hi.eq(_unkey(new_hi))]
        with m.If(a_valid):
            m.d.sync += [acc_lo.eq(new_lo), acc_hi.eq(new_hi)]
        f2_valid, f2_bank = Signal(), reg(2, "f2_bank")
        f2_lo_s, f2_lo_m = reg(1, "f2_lo_s"), reg(FIXED_BITS - 1, "f2_lo_m")
        f2_hi_s, f2_hi_m = reg(1, "f2_hi_s"), reg(FIXED_BITS - 1, "f2_hi_m")
        m.d.sync += [f2_valid.eq(f1_valid), f2_bank.eq(f1_bank),
                     Cat(f2_lo_s, f2_lo_m).eq(Cat(*_magnitude(f1_lo))),
                     Cat(f2_hi_s, f2_hi_m).eq(Cat(*_magnitude(f1_hi)))]
        with m.If(f2_valid):
            for b in range(banks):
                with m.If(f2_bank == b):
                    m.d.sync += [lo[b].eq(Mux(f2_lo_s, -f2_lo_m, f2_lo_m)),
                                 hi[b].eq(Mux(f2_hi_s, -f2_hi_m, f2_hi_m)),
                                 reduced[b].eq(1)]

        # -- reader: a free-running pipeline into an output FIFO, paced by credits ------------
        # A whole-pipeline stall would put o.ready on the clock enable of every read-side
        # register; at 16 lanes that net alone set the Fmax (about 100 MHz on ECP5-85 speed 6).
        # Instead a beat is issued only when the FIFO is sure to have room for it when it
        # arrives: `credit` counts the beats issued and not yet taken from the FIFO.
        m.submodules.out_fifo = fifo = SyncFIFOBuffered(width=self.out_layout.size,
                                                        depth=self.fifo_depth)
        credit = Signal(range(self.fifo_depth + 1))
        rsel = Signal(2)
        rcnt = Signal(cnt_bits)
        rd_last = rcnt == n - 1
        issue = reduced.bit_select(rsel, 1) & (credit != self.fifo_depth)
        taken = self.o.valid & self.o.ready
        m.d.sync += credit.eq(credit + issue - taken)
        m.d.comb += [rp.addr.eq(Cat(rcnt, rsel)), rp.en.eq(1)]
        with m.If(issue):
            m.d.sync += rcnt.eq(Mux(rd_last, 0, rcnt + 1))
            with m.If(rd_last):
                m.d.sync += rsel.eq(next_bank(rsel))
        # the writer sets written[b] on the bank it fills; the reader clears it on the bank it
        # has just finished issuing: never the same bank in one cycle (a bank is only read once
        # reduced, hence written, and only written once cleared)
        for b in range(banks):
            with m.If(accept & w_last & (wsel == b)):
                m.d.sync += written[b].eq(1)
            with m.If(issue & rd_last & (rsel == b)):
                m.d.sync += [written[b].eq(0), reduced[b].eq(0)]

        # stage 1: memory data; copy the bank's range so the bank can be refilled at once
        s1_valid, s1_last = Signal(), reg(1, "s1_last")
        s1_lo, s1_hi = reg(signed(FIXED_BITS), "s1_lo"), reg(signed(FIXED_BITS), "s1_hi")
        sel_lo, sel_hi = lo[0], hi[0]
        for b in range(1, banks):
            sel_lo = Mux(rsel == b, lo[b], sel_lo)
            sel_hi = Mux(rsel == b, hi[b], sel_hi)
        m.d.sync += [s1_valid.eq(issue), s1_last.eq(rd_last),
                     s1_lo.eq(sel_lo), s1_hi.eq(sel_hi)]
        # stage 1b: the block RAM's output registered before any logic
        s1b_valid, s1b_last = Signal(), reg(1, "s1b_last")
        s1b_lo, s1b_hi = reg(signed(FIXED_BITS), "s1b_lo"), reg(signed(FIXED_BITS), "s1b_hi")
        beat = reg(beat_layout, "s1b_beat")
        m.d.sync += [s1b_valid.eq(s1_valid), s1b_last.eq(s1_last), s1b_lo.eq(s1_lo),
                     s1b_hi.eq(s1_hi), beat.eq(rp.data)]
        s1_valid, s1_last, s1_lo, s1_hi = s1b_valid, s1b_last, s1b_lo, s1b_hi

        # stages 2 and 3: FP16 -> magnitude in two shifter halves (by 8 x shift[3:5], then
        # by shift[0:3]); stage 3 also inverts it by the sign; -lo and the span on the side
        w = FIXED_BITS + 1
        s2_valid, s2_last = Signal(), reg(1, "s2_last")
        s2_nlo, s2_span = reg(signed(w), "s2_nlo"), reg(unsigned(FIXED_BITS), "s2_span")
        s2_lo = reg(signed(FIXED_BITS), "s2_lo")
        s2_coarse = [reg(11 + 24, f"s2_coarse{k}") for k in range(lanes)]
        s2_fine = [reg(3, f"s2_fine{k}") for k in range(lanes)]
        s2_s, s2_inf, s2_nan = ([reg(1, f"s2_{t}{k}") for k in range(lanes)]
                                for t in ("s", "inf", "nan"))
        m.d.sync += [s2_valid.eq(s1_valid), s2_last.eq(s1_last), s2_lo.eq(s1_lo),
                     s2_nlo.eq(-s1_lo), s2_span.eq((s1_hi - s1_lo)[0:FIXED_BITS])]
        for k in range(lanes):
            bits = beat[k]
            special, man_zero = bits[10:15] == 31, bits[0:10] == 0
            sig, shift = _shift_parts(bits)
            m.d.sync += [s2_coarse[k].eq(sig << Cat(Const(0, 3), shift[3:5])),
                         s2_fine[k].eq(shift[0:3]), s2_s[k].eq(bits[15]),
                         s2_inf[k].eq(special & man_zero),
                         s2_nan[k].eq(special & ~man_zero)]

        s3_valid, s3_last = Signal(), reg(1, "s3_last")
        s3_nlo, s3_span = reg(signed(w), "s3_nlo"), reg(unsigned(FIXED_BITS), "s3_span")
        s3_lo = reg(signed(FIXED_BITS), "s3_lo")
        s3_s = [reg(1, f"s3_s{k}") for k in range(lanes)]
        s3_inv = [reg(w, f"s3_inv{k}") for k in range(lanes)]
        m.d.sync += [s3_valid.eq(s2_valid), s3_last.eq(s2_last), s3_lo.eq(s2_lo),
                     s3_nlo.eq(s2_nlo), s3_span.eq(s2_span)]
        for k in range(lanes):
            mag = (s2_coarse[k] << s2_fine[k])[1:FIXED_BITS]
            # canonical input, as in _canon: +-inf -> +-65504, NaN -> +0
            mag = Mux(s2_inf[k], INF_FIXED, Mux(s2_nan[k], 0, mag))
            sign = s2_s[k] & ~s2_nan[k]
            m.d.sync += [s3_s[k].eq(sign), s3_inv[k].eq(mag ^ sign.replicate(w))]

        # stage 4: d = x - lo = inv + sign + (-lo) in one carry chain: the sign rides in as
        # the carry out of an extra LSB (2a + s) + (2b + s) = 2(a + b + s)
        s4_valid, s4_last, s4_nz = Signal(), reg(1, "s4_last"), reg(1, "s4_nz")
        s4_lo, s4_span = reg(signed(FIXED_BITS), "s4_lo"), reg(unsigned(FIXED_BITS), "s4_span")
        s4_d = [reg(unsigned(FIXED_BITS), f"s4_d{k}") for k in range(lanes)]
        m.d.sync += [s4_valid.eq(s3_valid), s4_last.eq(s3_last), s4_lo.eq(s3_lo),
                     s4_span.eq(s3_span), s4_nz.eq(s3_span != 0)]
        for k in range(lanes):
            total = Cat(s3_s[k], s3_inv[k]) + Cat(s3_s[k], s3_nlo.as_unsigned())
            m.d.sync += s4_d[k].eq(total[1:1 + FIXED_BITS])

        # stages 5..8: restoring division, one quotient bit per stage
        valid, last, nz, lo_c, span = s4_valid, s4_last, s4_nz, s4_lo, s4_span
        rem = s4_d
        quo = [Const(0, 0)] * lanes
        for step in range(CODE_BITS):
            tag = f"d{step}"
            n_valid, n_last, n_nz = Signal(name=f"{tag}_valid"), reg(1, f"{tag}_last"), \
                reg(1, f"{tag}_nz")
            n_lo, n_span = reg(signed(FIXED_BITS), f"{tag}_lo"), \
                reg(unsigned(FIXED_BITS), f"{tag}_span")
            n_quo = [reg(step + 1, f"{tag}_q{k}") for k in range(lanes)]
            final = step == CODE_BITS - 1
            n_rem = [None if final else reg(unsigned(FIXED_BITS), f"{tag}_r{k}")
                     for k in range(lanes)]
            m.d.sync += [n_valid.eq(valid), n_last.eq(last), n_nz.eq(nz),
                         n_lo.eq(lo_c), n_span.eq(span)]
            for k in range(lanes):
                r2 = Cat(Const(0, 1), rem[k])                    # 2r, < 2^42
                diff = r2 - span                                 # 43-bit signed
                ge = ~diff[-1] & nz
                m.d.sync += n_quo[k].eq(Cat(ge, quo[k]))
                if not final:
                    m.d.sync += n_rem[k].eq(Mux(ge, diff, r2)[0:FIXED_BITS])
            valid, last, nz, lo_c, span, rem, quo = (n_valid, n_last, n_nz, n_lo, n_span,
                                                     n_rem, n_quo)

        result = Signal(self.out_layout)
        m.d.comb += [
            result.lo.eq(lo_c),
            result.span.eq(span),
            result.last.eq(last),
            fifo.w_data.eq(result.as_value()),
            fifo.w_en.eq(valid),               # never full: the credits see to that
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
        m.d.comb += [result.codes[k].eq(quo[k]) for k in range(lanes)]
        return m
