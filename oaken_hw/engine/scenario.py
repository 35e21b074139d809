"""Plans for the engine bench, with what :class:`~oaken_hw.engine.model.EngineModel` expects.

A plan is a list of *phases* separated by barriers (:mod:`oaken_hw.engine.bench`). Inside a
phase the bench drives its streams concurrently with random gaps, so the builder only puts
together what commutes; it checks this as it goes:

- threshold writes stay in phases without writes and reads (a vector's thresholds would
  depend on timing otherwise); the bench lets them settle before the barrier;
- reads only target tokens whose ``write_done`` arrived in earlier phases, and the status of
  an erroneous read must not depend on the phase's writes;
- plain frees stay out of phases with writes (page allocation order), and no read in their
  phase touches the freed sequence;
- ``free_on_oop`` frees (sent by the bench when ``out_of_pages`` holds) are applied by the
  model at the write that stalls, exactly where the engine needs them.

:meth:`PlanBuilder.phase` runs each phase through the model in the order thresholds, frees,
writes, reads and records the expected outputs of every port, each tagged with what it
belongs to (for the mismatch message).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..calibrate import load_thresholds
from .model import EngineModel
from .ports import EnginePorts
from .top import OakenEngine

__all__ = ["PlanBuilder", "pack_payload", "unpack_payload", "random_vectors",
           "random_thresholds", "default_scenario", "kv_vectors"]


# -- payloads --------------------------------------------------------------------------------

def _width(shape):
    from amaranth.hdl import Shape
    from amaranth.lib import data
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width


def pack_payload(layout, value):
    """Integer of ``value`` (nested dicts / lists / ints) laid out as ``layout`` (LSB first)."""
    from amaranth.lib import data
    if isinstance(layout, data.StructLayout):
        out = 0
        for name, f in layout:
            out |= pack_payload(f.shape, value.get(name, 0)) << f.offset
        return out
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        out = 0
        for i, v in enumerate(value):
            out |= pack_payload(layout.elem_shape, v) << (i * w)
        return out
    return int(value) & ((1 << _width(layout)) - 1)


class _Packer:
    """A compiled :func:`pack_payload` for one layout: ``(path, offset, mask)`` per leaf."""

    def __init__(self, layout):
        from amaranth.lib import data
        self.leaves = []

        def walk(shape, path, off):
            if isinstance(shape, data.StructLayout):
                for name, f in shape:
                    walk(f.shape, path + (name,), off + f.offset)
            elif isinstance(shape, data.ArrayLayout):
                w = _width(shape.elem_shape)
                for i in range(shape.length):
                    walk(shape.elem_shape, path + (i,), off + i * w)
            else:
                self.leaves.append((path, off, (1 << _width(shape)) - 1))
        walk(layout, (), 0)

    def __call__(self, value):
        out = 0
        for path, off, mask in self.leaves:
            v = value
            try:
                for k in path:
                    v = v[k]
            except (KeyError, IndexError):
                continue
            out |= (int(v) & mask) << off
        return out


def unpack_payload(layout, value):
    """Inverse of :func:`pack_payload`."""
    from amaranth.lib import data
    if isinstance(layout, data.StructLayout):
        return {name: unpack_payload(f.shape, (value >> f.offset) & ((1 << _width(f.shape)) - 1))
                for name, f in layout}
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        return [unpack_payload(layout.elem_shape, (value >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    return value


# -- the builder -----------------------------------------------------------------------------

class PlanBuilder:
    """Builds a bench plan and, phase by phase, the outputs the model expects.

    Parameters
    ----------
    cfg : OakenConfig
    seed : int
        The bench's random gaps.
    stream : dict
        Default stream probabilities (``p_valid``, ``p_ready``, ``p_mem``, ``p_rdata``,
        ``mem_latency``).

    Attributes
    ----------
    model : EngineModel
        The model, advanced phase by phase.
    phases : list of dict
        The plan's phases (payloads as hex strings).
    expected : list of dict
        Per phase: ``{port: [(payload, tag)]}`` for ``write_done``, ``o``, ``read_done``,
        ``free_done``, and ``mem``: ``[((addr, data, we), tag)]``.
    vectors : int
        Vectors written so far.
    """

    def __init__(self, cfg, *, seed=1, stream=None):
        self.cfg = cfg
        self.ports = P = EnginePorts(cfg)
        self.model = EngineModel(cfg)
        self.seed = seed
        self.stream = dict(stream or {})
        self.phases, self.expected, self.snapshots = [], [], []
        self.vectors = 0
        self.reads = 0
        self._o_hdr_off = P.o["header"].offset
        self._o_last_off = P.o["last"].offset
        self._o_mal_off = P.o["malformed"].offset
        self.lanes = cfg.quant.lanes
        self.beats_per_token = cfg.model.head_dim // cfg.quant.lanes
        self._written = {}            # (seq, layer, kv) -> tokens whose write_done came before
        self._packers = {}
        self._kv_hdr_off = P.kv_in["header"].offset
        self._kv_data_off = P.kv_in["data"].offset

    # -- payloads --
    def _pack(self, layout, value):
        key = id(layout)
        if key not in self._packers:
            self._packers[key] = _Packer(layout)
        return self._packers[key](value)

    def _hex(self, layout, value):
        return format(self._pack(layout, value), "x")

    def _o_beats(self, req, res, tag):
        P = self.ports
        seq, layer, kv, head = req[:4]
        out = []
        for pos, vals, bad in zip(res.pos, res.values, res.malformed):
            hdr = self._pack(P.header, {"seq": seq, "layer": layer, "kv": kv, "head": head,
                                          "pos": int(pos)}) << self._o_hdr_off
            raw = vals.astype("<u2").tobytes()
            for b in range(self.beats_per_token):
                data = int.from_bytes(raw[2 * b * self.lanes:2 * (b + 1) * self.lanes], "little")
                last = int(b == self.beats_per_token - 1) << self._o_last_off
                out.append((data | hdr | last | int(bad) << self._o_mal_off,
                            f"{tag} token {int(pos)} beat {b}"))
        return out

    def _write_done(self, res, tag, exp):
        exp["write_done"].append((self._pack(self.ports.write_done, {
            "seq": res.seq, "layer": res.layer, "kv": res.kv, "pos": res.pos,
            "status": res.status}), tag))
        exp["mem"] += [(w, f"{tag} memory write {i}") for i, w in enumerate(res.mem_writes)]
        if res.status == 0:
            key = (res.seq, res.layer, res.kv)
            self._pending_written[key] = self._pending_written.get(key, 0) + 1

    # -- a phase --
    def phase(self, *, thresholds=(), writes=None, reads=(), frees=(), free_on_oop=(),
              reset_after=None, settle=None, stream=None, name=""):
        """Add a phase and run it through the model.

        Parameters
        ----------
        thresholds : sequence of (layer, kv, t4)
            ``t4``: four FP16 values or bit patterns (uint16 arrays are taken as bits).
        writes : (headers, x) or None
            ``headers``: dicts with ``seq, layer, kv, pos`` (and optionally ``head``, ignored
            by the engine); ``x``: ``(n, vector_len)`` FP16.
        reads : sequence of (seq, layer, kv, head, lo, hi)
        frees : sequence of seq
        free_on_oop : sequence of seq
            Sequences the bench frees, one at a time, when the engine is out of pages; the
            model frees them at the writes that stall. Only the ones needed are kept.
        reset_after : int or None
            Raise ``rst`` this many cycles into the phase; the model then resets. Outputs of
            this phase are compared as a prefix.
        settle : int or None
            Idle cycles after the barrier (default 8 after threshold writes, else 0).
        stream : dict or None
            Stream probability overrides for this phase.
        """
        P, m = self.ports, self.model
        if thresholds and (writes is not None or reads):
            raise ValueError("threshold writes need a phase without writes and reads")
        if frees and writes is not None:
            raise ValueError("plain frees need a phase without writes (use free_on_oop)")
        ph = {"name": name}
        exp = {"write_done": [], "o": [], "read_done": [], "free_done": [], "mem": []}
        self._pending_written = {}
        pi = len(self.phases)
        if reset_after is not None:
            self.snapshots.append((pi, {a: bytes(v) for a, v in m.memory.items()}))

        if thresholds:
            tw = []
            for layer, kv, t in thresholds:
                t = np.asarray(t)
                bits = t if t.dtype == np.uint16 else t.astype(np.float16).view(np.uint16)
                m.write_thresholds(layer, kv, bits)
                tw.append(self._hex(P.thresholds, {"layer": layer, "kv": kv, "t": dict(zip(
                    ("o_lo", "i_lo", "i_hi", "o_hi"), (int(b) for b in bits)))}))
            ph["thresholds"] = tw

        read_seqs = {r[0] for r in reads}
        if frees:
            if read_seqs & set(frees):
                raise ValueError("a free and a read of the same sequence in one phase")
            ph["free"] = [self._hex(P.free, {"seq": s}) for s in frees]
            for s in frees:
                res = m.free(s)
                if res.status == 0:
                    self._written = {k: v for k, v in self._written.items() if k[0] != s}
                assert not res.writes, "a free retried writes outside a write phase"
                exp["free_done"].append((self._pack(P.free_done, {
                    "seq": s, "status": res.status}), f"phase {pi} free of seq {s}"))

        # reads see the state at the start of the phase (they target earlier phases' data)
        read_results = []
        for i, r in enumerate(reads):
            seq, layer, kv, head, lo, hi = r
            ok = hi <= self._written.get((seq, layer, kv), 0) and lo <= hi
            read_results.append((r, m.read(*r) if ok else None))

        oop = list(free_on_oop)
        used_oop = []
        if writes is not None:
            headers, x = writes
            vb = self.cfg.beats_per_vector
            x = np.asarray(x, np.float16)
            tags = deque()
            enc = m.encode(x, [h["layer"] for h in headers], [h["kv"] for h in headers])
            beats = []
            xb = x.view(np.uint16)
            for i, (h, e) in enumerate(zip(headers, enc)):
                tag = (f"vector {self.vectors} (phase {pi}: seq {h['seq']} layer {h['layer']} "
                       f"{'KV'[h['kv']]} pos {h['pos']})")
                self.vectors += 1
                hdr = {"seq": h["seq"], "layer": h["layer"], "kv": h["kv"],
                       "head": h.get("head", 0), "pos": h["pos"]}
                hbits = self._pack(P.header, hdr) << self._kv_hdr_off
                raw = xb[i].astype("<u2").tobytes()
                for b in range(vb):
                    d = int.from_bytes(raw[2 * b * self.lanes:2 * (b + 1) * self.lanes], "little")
                    beats.append(format(hbits | d << self._kv_data_off, "x"))
                tags.append(tag)
                for res in m.submit(h, e):
                    self._write_done(res, tags.popleft(), exp)
                while m.out_of_pages and oop:
                    s = oop.pop(0)
                    used_oop.append(s)
                    fr = m.free(s)
                    if fr.status == 0:
                        self._written = {k: v for k, v in self._written.items() if k[0] != s}
                    exp["free_done"].append((self._pack(P.free_done, {
                        "seq": s, "status": fr.status}), f"phase {pi} free (out of pages) of seq {s}"))
                    for res in fr.writes:
                        self._write_done(res, tags.popleft(), exp)
            if m.out_of_pages and reset_after is None:
                raise ValueError(f"phase {pi}: the engine would stay out of pages "
                                 f"(give more free_on_oop sequences)")
            ph["kv_in"] = beats
        if used_oop:
            ph["free_on_oop"] = [self._hex(P.free, {"seq": s}) for s in used_oop]

        # now the reads, in request order, against the state when they were built
        if reads:
            ph["read"] = [self._hex(P.read, dict(zip(
                ("seq", "layer", "kv", "head", "lo", "hi"), r))) for r in reads]
            for r, res in read_results:
                if res is None:          # an error whose status cannot depend on this phase
                    res = m.read(*r)
                    if res.status == 0:
                        raise ValueError(f"read {r} targets data of its own phase")
                tag = (f"read {self.reads} (phase {pi}: seq {r[0]} layer {r[1]} {'KV'[r[2]]} "
                       f"head {r[3]} [{r[4]}, {r[5]}))")
                self.reads += 1
                exp["o"] += self._o_beats(r, res, tag)
                exp["read_done"].append((self._pack(P.read_done, {
                    "status": res.status, "tokens": len(res.pos)}), tag))

        if reset_after is not None:
            ph["reset_after"] = int(reset_after)
            m.reset()
            self._written = {}
        else:
            for k, v in self._pending_written.items():
                self._written[k] = self._written.get(k, 0) + v
            ph["expect"] = {p: len(exp[p]) for p in ("write_done", "read_done", "free_done")}
        if settle is None:
            settle = 8 if thresholds else 0
        ph["settle"] = settle
        if stream:
            ph["stream"] = dict(stream)
        self.phases.append(ph)
        self.expected.append(exp)
        return exp

    def written(self, seq, layer, kv):
        """Tokens of a group whose ``write_done`` came in earlier phases."""
        return self._written.get((seq, layer, kv), 0)

    def plan(self, **extra):
        """The plan dict for the bench (without ``result``)."""
        return {"seed": self.seed, "beat_bytes": self.ports.beat_bytes,
                "addr_bits": self.ports.addr_bits, "stream": self.stream,
                "init_cycles": OakenEngine.init_cycles_for(self.cfg),
                "max_cycles": 50_000_000, "phases": self.phases, **extra}


# -- workloads -------------------------------------------------------------------------------

def random_vectors(cfg, n, seed):
    """Heavy-tailed random vectors (Student t, 2 degrees of freedom, random scale) with 1 %
    special values (NaN, +-Inf, -0, the smallest subnormal, +-65504) and three corner vectors
    first: all zero, a ramp (mostly outer), every element an outlier."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1e-3, 0.1, 1, 10], (n, 1))
    x = (rng.standard_t(2, (n, cfg.vector_len)) * scale).astype(np.float16)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504, -65504], np.float16)
    hit = rng.random(x.shape) < 0.01
    x[hit] = rng.choice(special, hit.sum())
    corners = [np.zeros(cfg.vector_len), np.linspace(-40, 40, cfg.vector_len),
               np.where(np.arange(cfg.vector_len) % 2, 300, -300)]
    for i, c in enumerate(corners[:n]):
        x[i] = c
    return x


def random_thresholds(cfg, seed):
    """Plausible ordered thresholds ``(layers, 2, 4)`` FP16 for the random vectors."""
    rng = np.random.default_rng(seed)
    n = cfg.model.layers * 2
    outer = rng.uniform(0.5, 4, (n, 2))
    inner = rng.uniform(0.005, 0.3, (n, 2))
    th = np.stack([-outer[:, 0], -inner[:, 0], inner[:, 1], outer[:, 1]], axis=-1)
    return th.astype(np.float16).reshape(cfg.model.layers, 2, 4)


def kv_vectors(cfg, kv_path, thresholds_path):
    """Per-token vectors of a KV ``.npz`` and thresholds of a calibration JSON.

    Returns ``(k, v, th)``: ``k``, ``v`` ``(tokens, layers, vector_len)``, ``th``
    ``(layers, 2, 4)`` FP16.
    """
    from ..commands.model import load_kv
    k, v, _ = load_kv(kv_path, "k")
    g = cfg.model
    if k.shape[0] != g.layers or k.shape[1] != g.kv_heads or k.shape[3] != g.head_dim:
        raise ValueError(f"{kv_path}: K/V shaped {k.shape}, the configuration needs "
                         f"({g.layers}, {g.kv_heads}, tokens, {g.head_dim})")
    th_k, th_v, _ = load_thresholds(thresholds_path)
    if len(th_k) != g.layers:
        raise ValueError(f"{thresholds_path}: thresholds for {len(th_k)} layers, the "
                         f"configuration has {g.layers}")
    per_token = lambda a: a.transpose(2, 0, 1, 3).reshape(a.shape[2], g.layers, -1)
    return per_token(k), per_token(v), np.stack([th_k, th_v], axis=1)


def throughput_scenario(cfg, tokens, seed, *, kv=None, thresholds=None):
    """Sustained throughput: one group's long history, always-ready memory and streams.

    ``tokens`` vectors of sequence 0, layer 0, K (phase ``measure writes``), then every
    head's whole history ``[0, tokens)`` read twice (phase ``measure reads``). Without the
    per-request and pipeline start-up costs that short histories carry, the rates are the
    paths' steady state (the limit is 1 beat per cycle).

    Parameters
    ----------
    tokens : int
        History length (at most ``mmu.max_tokens``).
    kv : (k, v) per-token arrays from :func:`kv_vectors`, or None for random vectors
        Layer 0's keys are written, repeated if the data has fewer tokens.
    thresholds : (layers, 2, 4) FP16 or None (random)
    """
    g, mm = cfg.model, cfg.mmu
    if isinstance(tokens, bool) or not isinstance(tokens, int) \
            or not 1 <= tokens <= mm.max_tokens:
        raise ValueError(f"tokens must be an integer in 1..{mm.max_tokens} (mmu.max_tokens), "
                         f"not {tokens!r}")
    th = random_thresholds(cfg, seed) if thresholds is None \
        else np.asarray(thresholds, np.float16)
    if kv is None:
        x = random_vectors(cfg, tokens, seed)
    else:
        k = kv[0][:, 0]
        x = k[np.arange(tokens) % len(k)]
    full = {"p_valid": 1.0, "p_ready": 1.0, "p_mem": 1.0, "p_rdata": 1.0, "mem_latency": 1}
    b = PlanBuilder(cfg, seed=seed, stream=full)
    b.phase(thresholds=[(0, 0, th[0, 0])], name="thresholds")
    b.phase(writes=([{"seq": 0, "layer": 0, "kv": 0, "pos": t} for t in range(tokens)], x),
            name="measure writes")
    b.phase(reads=[(0, 0, 0, h, 0, tokens) for h in range(g.kv_heads)] * 2,
            name="measure reads")
    return b


def tokens_in_pages(cfg, sequences):
    """The most tokens (at least 2) that ``sequences`` sequences can all hold at once.

    Every group of every sequence needs its dense and metadata pages, and each sparse
    stream is counted at its capacity (``mmu.sparse_pages``), whatever the data: a plan of
    this many tokens never leaves the engine out of pages before its frees.
    """
    from ..mmu.layout import MMULayout
    L = MMULayout(cfg)

    def pages(t):
        return sequences * L.groups * (L.heads * (-(-t // L.dense_tpp) + L.sparse_entries)
                                       + L.vectors * -(-t // L.meta_tpp))

    t = cfg.mmu.max_tokens
    while t > 2 and pages(t) > L.pages:
        t -= 1
    return t


def default_scenario(cfg, vectors, seed, *, kv=None, thresholds=None, measure=True,
                     stream=None):
    """The scenario of ``oaken-hw sim``: several sequences interleaved, every layer, K and V.

    - thresholds of every layer and K/V, then malformed writes (unordered, NaN,
      ``layer >= layers`` when representable), which are dropped;
    - write phases of a few tokens of every sequence, layer and K/V, each carrying reads of
      earlier phases' data (whole histories and windows of random heads) and erroneous
      requests (``lo > hi``, beyond the written range, a sequence not live, a bad head,
      ``BAD_POSITION`` and ``BAD_FIELD`` writes);
    - a rewrite of one layer's thresholds (reads decode with the table at read time);
    - with ``measure``: a write phase and a read phase of whole histories with always-ready
      memory and streams (the throughput figures);
    - frees (a double free too) with reads of another sequence, then a sequence restarted on
      the reused pages, and reads of it.

    Parameters
    ----------
    vectors : int
        Vectors to write (the scenario rounds to whole tokens of every sequence, at most
        :func:`tokens_in_pages`: a small MMU caps the self-check, it does not fail it).
    kv : (k, v) per-token arrays from :func:`kv_vectors`, or None for random vectors
    thresholds : (layers, 2, 4) FP16 or None (random)

    Returns
    -------
    PlanBuilder
    """
    g, mm = cfg.model, cfg.mmu
    rng = np.random.default_rng(seed)
    b = PlanBuilder(cfg, seed=seed, stream=stream)
    th = random_thresholds(cfg, seed) if thresholds is None else np.asarray(thresholds, np.float16)
    seqs = list(range(mm.sequences))
    per_token = len(seqs) * g.layers * 2
    tokens = max(2, min(-(-vectors // per_token), tokens_in_pages(cfg, len(seqs))))
    if kv is None:
        pool = random_vectors(cfg, tokens * per_token, seed)
        src = lambda s, l, k, t, i: pool[i]
    else:
        kk, vv = kv
        nt = kk.shape[0]
        src = lambda s, l, k, t, i: (kk if k == 0 else vv)[(s * tokens + t) % nt, l]

    writes = [(l, k, th[l, k]) for l in range(g.layers) for k in range(2)]
    bad = [(0, 0, np.array([1, -1, 0.5, 2], np.float16)),
           (g.layers - 1, 1, np.array([-2, -1, 1, np.nan], np.float16)),
           (0, 1, np.array([-np.inf, -1, 1, 2], np.float16))]
    if g.layers < 1 << max(1, (g.layers - 1).bit_length()):
        bad.append((g.layers, 0, np.array([-2, -1, 1, 2], np.float16)))
    b.phase(thresholds=writes + bad, name="thresholds")

    counter = [0]

    def write_chunk(t0, t1, order_seqs):
        headers, xs = [], []
        for t in range(t0, t1):
            for s in order_seqs:
                for l in range(g.layers):
                    for k in (0, 1):
                        headers.append({"seq": s, "layer": l, "kv": k, "pos": t,
                                        "head": int(rng.integers(0, g.kv_heads))})
                        xs.append(src(s, l, k, t, counter[0] % len(pool) if kv is None else 0))
                        counter[0] += 1
        return headers, xs

    def bad_writes(t0, t1):
        """Writes whose status does not depend on where in the phase they land."""
        s = int(rng.choice(seqs))
        hs = []
        if t1 + 1 < mm.max_tokens:
            hs.append({"seq": s, "layer": 0, "kv": 0, "pos": t1 + 1})          # skips ahead
        if g.layers < 1 << max(1, (g.layers - 1).bit_length()):
            hs.append({"seq": s, "layer": g.layers, "kv": 1, "pos": 0})       # BAD_FIELD
        if t0 > 0:
            hs.append({"seq": s, "layer": g.layers - 1, "kv": 0, "pos": t0 - 1})  # rewrite
        return hs

    def reads_of(n_groups, windows=True, errors=True):
        out = []
        live = [s for s in seqs if b.written(s, 0, 0)]
        for _ in range(n_groups):
            if not live:
                break
            s, l, k = int(rng.choice(live)), int(rng.integers(g.layers)), int(rng.integers(2))
            n = b.written(s, l, k)
            for h in range(g.kv_heads):
                out.append((s, l, k, h, 0, n))
                if windows:
                    lo, hi = sorted(int(v) for v in rng.integers(0, n + 1, 2))
                    out.append((s, l, k, h, lo, hi))
        if errors and live:
            s = live[0]
            n = b.written(s, 0, 0)
            out.append((s, 0, 0, 0, min(n, 3), max(0, min(n, 3) - 1)) if n else (s, 0, 0, 0, 1, 0))
            out.append((s, 0, 1, 1, 0, mm.max_tokens))                   # beyond what exists
            if g.kv_heads < 1 << max(1, (g.kv_heads - 1).bit_length()):
                out.append((s, 0, 0, g.kv_heads, 0, 1))                   # BAD_FIELD
        rng.shuffle(out)
        return out

    measure_tokens = max(1, tokens // 4) if measure and tokens >= 4 else 0
    rnd_tokens = tokens - measure_tokens
    chunk = max(1, min(8, rnd_tokens // 3 or 1))
    t = 0
    while t < rnd_tokens:
        t1 = min(rnd_tokens, t + chunk)
        hs, xs = write_chunk(t, t1, seqs)
        extra = bad_writes(t, t1)
        cut = len(hs) // 2                # erroneous writes in the middle of the phase
        hs = hs[:cut] + extra + hs[cut:]
        xs = xs[:cut] + [xs[0]] * len(extra) + xs[cut:]
        b.phase(writes=(hs, np.array(xs)), reads=reads_of(3), name=f"write {t}..{t1}")
        t = t1
        if t >= rnd_tokens // 2 and not getattr(b, "_rethreshold", False):
            b._rethreshold = True
            l = int(rng.integers(g.layers))
            new = np.array([-1.5, -0.05, 0.05, 1.5], np.float16)
            b.phase(thresholds=[(l, 0, new)], name="threshold rewrite")

    if measure_tokens:
        hs, xs = write_chunk(rnd_tokens, tokens, seqs)
        full = {"p_valid": 1.0, "p_ready": 1.0, "p_mem": 1.0, "p_rdata": 1.0, "mem_latency": 1}
        b.phase(writes=(hs, np.array(xs)), stream=full, name="measure writes")
        reads = []
        for s in seqs:
            for l in range(0, g.layers, max(1, g.layers // 4)):
                for k in (0, 1):
                    for h in range(g.kv_heads):
                        reads.append((s, l, k, h, 0, b.written(s, l, k)))
        b.phase(reads=reads, stream=full, name="measure reads")

    # frees (and a double free) while another sequence is read, then reuse
    if len(seqs) > 1:
        freed = seqs[:-1]
        keep = seqs[-1]
        reads = [(keep, l, k, h, 0, b.written(keep, l, k))
                 for l in range(min(2, g.layers)) for k in (0, 1) for h in range(g.kv_heads)]
        b.phase(frees=freed + [freed[0]], reads=reads, name="frees")
        hs, xs = write_chunk(0, min(3, tokens), [freed[0]])
        gone = [(s, 0, 0, 0, 0, 0) for s in freed[1:2]]           # UNKNOWN_SEQ
        b.phase(writes=(hs, np.array(xs)), reads=gone, name="restart")
        b.phase(reads=[(freed[0], l, k, h, 0, b.written(freed[0], l, k))
                       for l in range(g.layers) for k in (0, 1) for h in range(g.kv_heads)],
                name="reads after restart")
    return b
