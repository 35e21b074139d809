"""The steps of a vector: middle split and ``step_for`` (the paper's "scale" block).

``step = roundup_fp16(ceil(extent * ceil(2^R / levels) / 2^R))`` with ``R = RECIP_BITS`` of the
model (read from it)
(:func:`oaken_hw.model.quantizer.step_for`): a small reciprocal table, one multiply, a
ceiling shift and a round-up to 11 significant bits, so no divider is needed.

The middle split (:func:`~oaken_hw.model.quantizer.middle_split`) is the exact argmin over
all ``codes + 1`` splits in the model. Because the step ``a / n`` of the splits where the
lower side binds falls with ``n`` and the step ``b / (codes - n)`` of those where the upper
side binds rises with ``n``, and the upper side binds exactly from
``n1 = ceil(codes * a / (a + b))`` on (``a * (codes - n) <= b * n``), only two candidates
can win: the largest valid ``n < n1`` (``hi_n`` when ``n1 = codes``) and the smallest
valid ``n >= n1``. The circuit computes ``n1`` with a short restoring division (the
quotient has ``middle_bits + 1`` bits), compares the two candidates' steps by cross
multiplication with their small code counts, and breaks ties towards the smaller ``n`` as
the model does. ``test_scale_matches_model`` in ``tests/rtl/quant/test_quant_blocks.py``
checks this against the model.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...model.quantizer import RECIP_BITS
from ...model.quantizer import reciprocal as _model_reciprocal
from ..common.fp16 import MAG_WIDTH, one_hot_length, smear_down
from ..common.shift import shift_right
from .classifier import MAG_SHAPE

__all__ = ["Scale", "reciprocal", "split_reference"]

#: a step is below 2^40 (a valid FP16 value); intermediate results get some headroom
_STEP_WIDTH = MAG_WIDTH + 2
#: extent bits per partial product of the step multiply, and the reciprocal's bits that
#: go to the DSPs (an ECP5 / iCE40 DSP input is 18 or 16 bits wide)
_SLICE = 18


def reciprocal(n):
    """The golden model's table entry ``ceil(2^RECIP_BITS / n)`` as a Python int."""
    return int(_model_reciprocal(n))


def split_reference(a, b, has_lo, has_hi, codes):
    """Python mirror of the two-candidate split circuit (for tests): ``(n_lo, extent, levels)``."""
    s = a + b
    n1 = 0 if s == 0 else -(-codes * a // s)
    lo_n, hi_n = int(has_lo), codes - int(has_hi)
    nl = hi_n if n1 == codes else min(n1 - 1, hi_n)
    lower_ok = n1 >= 1 and nl >= max(lo_n, 1)
    nu = max(n1, lo_n)
    upper_ok = nu <= codes - 1
    if upper_ok and (not lower_ok or b * nl < a * (codes - nu)):
        return nu, b, codes - nu
    return nl, a, nl


def _roundup_mask(c):
    """The bits of ``c`` (unsigned) below its 11 leading ones: those with a set bit 11 or
    more places above them, ``smear_down(c) >> 11``, with no encoder or shifter."""
    return smear_down(c) >> 11


def _roundup_fp16(c, mask, width):
    """Smallest FP16 value (in units) >= ``c``: keep 11 significant bits (``mask`` from
    :func:`_roundup_mask`, registered a stage earlier)."""
    return ((c + mask)[:width + 1] & ~mask)[:width + 1]


def _mask_length(mask):
    """``n`` for a mask of :func:`_roundup_mask` (``2^n - 1``): one-hot at its top bit, then
    each result bit an OR (the priority encoder of ``bit_length`` is not needed)."""
    width = len(mask)
    return one_hot_length([mask[i] & ~mask[i + 1] if i + 1 < width else mask[i]
                           for i in range(width)])


def _step_fp16(step, normal, exp1, shift):
    """FP16 bit pattern of a rounded-up ``step`` (:func:`_roundup_fp16`) from parts known a
    stage earlier: ``normal`` (``c >= 1024``), ``shift = bit_length(c) - 11`` and
    ``exp1 = shift + 1``. The round-up can carry into a new top bit (``step = 2^L``): then
    the shifted value is ``2^11`` and the exponent one more."""
    shifted = shift_right(step, shift, 12)
    up = shifted[11]
    man = Mux(normal, shifted[:10], step[:10])
    exp = Mux(normal, (exp1 + up)[:5], 0)
    return Cat(man, exp, Const(0, 1))


class Scale(wiring.Component):
    """Middle split and the three steps of a vector, pipelined at one vector per cycle.

    Parameters
    ----------
    middle_bits : int
    tag_width : int
        Bits of a side-band word carried along with each vector (header, block counts...).

    Attributes
    ----------
    valid : In(1)
    a, b : In(41)
        Largest lower / upper middle magnitude.
    has_lo, has_hi : In(1)
    outer_max, inner_ext : In(41)
    tag : In(tag_width)
    o_valid : Out(1)
        ``latency`` cycles after ``valid``.
    n_lo : Out(range(codes + 1))
    delta_mid, delta_inner, delta_outer : Out(16)
        FP16 bit patterns of the steps.
    o_tag : Out(tag_width)
    latency : int
    """

    @staticmethod
    def latency_for(middle_bits):
        """Input register, the division (``middle_bits + 1`` stages), ``n1``, candidates,
        partial products, their sums, choice, reciprocal, multiply, ceiling, round-up mask,
        round-up, FP16."""
        return 1 + (middle_bits + 1) + 11

    def __init__(self, *, middle_bits, tag_width=1):
        if isinstance(middle_bits, bool) or not isinstance(middle_bits, int) \
                or not 2 <= middle_bits <= 7:
            raise ValueError(f"middle_bits must be an integer in [2, 7], not {middle_bits!r}")
        if isinstance(tag_width, bool) or not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self.middle_bits = middle_bits
        self.codes = 1 << middle_bits
        self.latency = self.latency_for(middle_bits)
        self.tag_width = tag_width
        super().__init__({
            "valid": In(1),
            "a": In(MAG_SHAPE), "b": In(MAG_SHAPE), "has_lo": In(1), "has_hi": In(1),
            "outer_max": In(MAG_SHAPE), "inner_ext": In(MAG_SHAPE),
            "tag": In(tag_width),
            "o_valid": Out(1),
            "n_lo": Out(range(self.codes + 1)),
            "delta_mid": Out(16), "delta_inner": Out(16), "delta_outer": Out(16),
            "o_tag": Out(tag_width),
        })

    def elaborate(self, platform):
        m = Module()
        codes, mb = self.codes, self.middle_bits
        nw = mb + 1                      # bits of a split 0..codes
        W = MAG_WIDTH + 1

        def stage(name, value, shape=None):
            s = Signal(shape if shape is not None else len(value), name=name)
            m.d.sync += s.eq(value)
            return s

        # --- stages 1..nw: n1 = ceil(codes * a / (a + b)) by restoring division, one
        # quotient bit per stage (each step is a 48-bit compare-subtract) -----------------
        a, b = self.a, self.b
        rw = W + nw + 1
        carry = {k: stage(f"s0_{k}", v) for k, v in dict(
            valid=self.valid, a=a, b=b, has_lo=self.has_lo, has_hi=self.has_hi,
            outer=self.outer_max, inner=self.inner_ext, tag=self.tag).items()}
        den = stage("s0_den", a + b, W + 1)
        # a + b == 0 from the inputs, so that no wide reduction follows the last stage
        carry["den_zero"] = stage("s0_den_zero", (a == 0) & (b == 0), 1)
        rem = stage("s0_rem", Const(0, rw) | (a << mb), rw)
        q = []
        for k in reversed(range(nw)):
            trial = den << k
            ge = rem >= trial
            n = nw - k
            q = [stage(f"s{n}_q{i}", bit, 1) for i, bit in enumerate(q + [ge])]
            carry = {key: stage(f"s{n}_{key}", v) for key, v in carry.items()}
            if k:
                nrem = Signal(rw, name=f"div_rem{k}")
                m.d.comb += nrem.eq(Mux(ge, rem - trial, rem))
                rem = stage(f"s{n}_rem", nrem, rw)
                den = stage(f"s{n}_den", den)
            else:
                # Only "is the last remainder non-zero" is needed (the ceiling). Taken from
                # equality tests that run beside the compare, not from the subtraction's
                # result, it keeps the 48-bit carry chain off the path into the candidates.
                inexact = stage(f"s{n}_inexact", Mux(ge, rem != trial, rem != 0), 1)
        quot = Const(0, nw)
        for bit in q:
            quot = (quot << 1 | bit)[:nw]
        # n1 gets a stage of its own: the quotient's increment and the candidates' compares
        # in one stage were over 10 ns at both seeds and the engine's critical path at one
        # (s5_inexact -> c_nl / c_mu, 10.1-10.7 ns, 11 levels on ECP5; session 23).
        s1 = {k: stage(f"n_{k}", v) for k, v in carry.items() if k != "den_zero"}
        s1_n1 = stage("n_n1", Mux(carry["den_zero"], 0, quot + inexact), nw + 1)

        # --- the two candidates -------------------------------------------------------------
        hi_n = (codes - s1["has_hi"])[:nw + 1]
        lo_n = s1["has_lo"]
        n1m1 = (s1_n1 - 1)[:nw + 1]
        nl = Mux(s1_n1 == codes, hi_n, Mux(n1m1 < hi_n, n1m1, hi_n))[:nw]
        # max(lo_n, 1) = 1: a lower-binding split needs at least one code
        lower_ok = (s1_n1 >= 1) & (nl >= 1)
        nu = Mux(s1_n1 > lo_n, s1_n1, lo_n)[:nw + 1]
        upper_ok = nu <= codes - 1
        mu = (codes - nu)[:nw]
        c = {k: stage(f"c_{k}", s1[k]) for k in ("valid", "outer", "inner", "tag", "a", "b")}
        c_nl, c_nu, c_mu = stage("c_nl", nl, nw), stage("c_nu", nu[:nw], nw), stage("c_mu", mu, nw)
        c_lok, c_uok = stage("c_lok", lower_ok, 1), stage("c_uok", upper_ok, 1)

        # --- their steps cross-multiplied (41 x nw-bit products), registered as partial
        # products of 18-bit slices (a DSP-sized multiply each) and summed a stage later:
        # multiplied and registered in one stage, they were the quantization engine's
        # critical path (13.6 ns, 47 levels on ECP5) -------------------------------------
        def partial_products(x, n, name):
            return [(stage(f"{name}{k}", x[k:k + _SLICE] * n), k)
                    for k in range(0, len(x), _SLICE)]

        def summed(parts, name):
            return stage(name, sum(p << k for p, k in parts), W + nw)
        side = ("valid", "outer", "inner", "tag", "a", "b", "nl", "nu", "mu", "lok", "uok")
        cand = dict(c, nl=c_nl, nu=c_nu, mu=c_mu, lok=c_lok, uok=c_uok)
        pp = {k: stage(f"p_{k}", cand[k]) for k in side}
        pp_bl = partial_products(c["b"], c_nl, "p_bl")
        pp_am = partial_products(c["a"], c_mu, "p_am")
        q = {k: stage(f"q_{k}", pp[k]) for k in side}
        q_bl, q_am = summed(pp_bl, "q_bl"), summed(pp_am, "q_am")
        upper_wins = q["uok"] & (~q["lok"] | (q_bl < q_am))
        s2 = {k: stage(f"s2_{k}", q[k]) for k in ("valid", "outer", "inner", "tag")}
        s2_nlo = stage("s2_nlo", Mux(upper_wins, q["nu"], q["nl"]), nw)
        s2_ext = stage("s2_ext", Mux(upper_wins, q["b"], q["a"]), MAG_SHAPE)
        s2_lev = stage("s2_lev", Mux(upper_wins, q["mu"], q["nl"]), nw)

        # --- extent x reciprocal (the table looked up a stage before the multiply) -------
        # The reciprocal has RECIP_BITS + 1 bits, more than a DSP input: its low _SLICE bits
        # go to the DSPs, and its high bits are 0 or a power of two (ceil(2^20 / n) >> 18
        # is 4, 2, 1, 1 for n = 1..4, 0 above, and 4 for the padding entry n = 0), so
        # their product is a multiplexer.
        # Multiplied whole, each DSP's product had an adder behind it (the quantizer's
        # critical path alone: r_rec -> s3_p_mid18, 13.9 ns, 20 levels on ECP5).
        # (Tables padded to a power of two so that the emitted case statement is complete.)
        recips = [reciprocal(n) for n in range(1 << nw)]
        highs = [r >> _SLICE for r in recips]
        assert all(h & (h - 1) == 0 for h in highs), "a reciprocal's high part is a power of two"
        rec_lo = Array(Const(r & ((1 << _SLICE) - 1), _SLICE) for r in recips)
        rec_hi = Array(Const(h, max(highs).bit_length()) for h in highs)
        pw = W + RECIP_BITS + 1
        r = {k: stage(f"r_{k}", s2[k]) for k in ("valid", "tag", "outer", "inner")}
        r_nlo, r_ext = stage("r_nlo", s2_nlo), stage("r_ext", s2_ext)
        r_rec = stage("r_rec", rec_lo[s2_lev], _SLICE)
        r_hi = stage("r_hi", rec_hi[s2_lev])
        s3 = {k: stage(f"s3_{k}", r[k]) for k in ("valid", "tag")}
        s3_nlo = stage("s3_nlo", r_nlo)
        # The 41 x 18-bit product is registered as partial products of 18-bit slices of
        # the extent (one DSP multiply each) and summed in the ceiling's stage: done whole,
        # its DSP cascade and adder tree were the quantization engine's critical path (46
        # levels, 15.2 ns on ECP5). The high part's product comes with the ceiling's
        # rounding constant added, so that the ceiling sums as many terms as before.
        bias = (1 << RECIP_BITS) - 1                # the ceiling's rounding constant
        p_mid = partial_products(r_ext, r_rec, "s3_p_mid")
        hi_prod = 0
        for bit in range(len(r_hi)):
            hi_prod = hi_prod | Mux(r_hi[bit], r_ext << bit, 0)
        p_mid.append((stage("s3_p_hi", (hi_prod << _SLICE) + bias, pw), 0))
        p_in = [(stage("s3_p_in", r["inner"] * reciprocal(2 * codes), pw), 0)]
        p_out = [(stage("s3_p_out", r["outer"] * reciprocal(codes), pw), 0)]

        # --- ceiling shift, then round up to an FP16 value (a stage each) -----------------
        cw = pw - RECIP_BITS
        s4 = {k: stage(f"s4_{k}", s3[k]) for k in ("valid", "tag")}
        s4_nlo = stage("s4_nlo", s3_nlo)

        def ceiling(parts, add):
            total = sum((p << k for p, k in parts), add)
            return (total >> RECIP_BITS)[:cw]
        # The round-up's mask is found a stage after the sum and applied a stage after that.
        # The mask and the round-up in one stage were the critical path (38 levels, 14.2 ns
        # on ECP5); then the sum and the mask in one stage were, at every seed once the read
        # path's handshake was cut (s3_p_mid0 -> s4_mask_mid, 13.0-13.5 ns, 5.1-5.4 of it
        # logic). Session 16 made this split and reverted it when another path limited the
        # engine (docs/flow.md).
        sums = {name: stage(f"s4_c_{name}", ceiling(parts, add), cw)
                for name, parts, add in (("mid", p_mid, 0), ("in", p_in, bias),
                                         ("out", p_out, bias))}
        m4 = {k: stage(f"m4_{k}", s4[k]) for k in ("valid", "tag")}
        m4_nlo = stage("m4_nlo", s4_nlo)
        cs = [(stage(f"m4_c_{name}", c_), stage(f"m4_mask_{name}", _roundup_mask(c_), cw))
              for name, c_ in sums.items()]
        s5 = {k: stage(f"s5_{k}", m4[k]) for k in ("valid", "tag")}
        s5_nlo = stage("s5_nlo", m4_nlo)
        # the FP16 exponent and shift come from the mask here, beside the round-up's add,
        # so that the last stage is only the mantissa's shifter (found from the rounded
        # step instead, the bit length and shift were the engine's critical path: 14.3 ns)
        fp16 = []
        for name, (c_, mask) in zip(("mid", "in", "out"), cs):
            step = stage(f"s5_step_{name}", _roundup_fp16(c_, mask, cw), _STEP_WIDTH)
            length = _mask_length(mask)
            shift = stage(f"s5_shift_{name}", length, 6)
            normal = stage(f"s5_normal_{name}", mask[0] | c_[10], 1)
            exp1 = stage(f"s5_exp1_{name}", length + 1, 5)
            fp16.append(_step_fp16(step, normal, exp1, shift))

        # --- FP16 bit patterns -----------------------------------------------------------
        m.d.sync += [
            self.o_valid.eq(s5["valid"]), self.o_tag.eq(s5["tag"]), self.n_lo.eq(s5_nlo),
            self.delta_mid.eq(fp16[0]), self.delta_inner.eq(fp16[1]),
            self.delta_outer.eq(fp16[2]),
        ]
        return m
