"""``OakenEngine``: the quantization engine, the MMU and the dequantization engine as one top."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..mmu.layout import MMULayout, Status
from ..mmu.mmu import MMU, record_layout
from ..rtl.common.threshold_table import ThresholdTable
from ..rtl.dequant import DequantEngine
from ..rtl.dequant.streams import dense_layout, meta_layout, sparse_layout
from ..rtl.quant import QuantEngine
from .model import check_engine_config, head_view_config
from .ports import EnginePorts
from .read_path import ReadPath
from .stream_register import StreamRegister
from .write_path import WritePath

__all__ = ["OakenEngine", "EngineStatusSignature"]

COUNTER_BITS = 32


class EngineStatusSignature(wiring.Signature):
    """The status port, from the engine's side.

    Members (Out unless noted): ``ready`` (the memories are initialised after reset),
    ``free_pages``, ``out_of_pages`` (an append waits for pages); 32-bit saturating counters
    ``vectors_written``, ``write_errors`` (appends with a status other than OK),
    ``tokens_read``, ``read_errors`` (read requests with a status other than OK),
    ``malformed`` (tokens read back malformed), ``bad_inputs`` (NaN/Inf input elements);
    sticky ``config_error`` (a threshold write was rejected); ``clear`` (In) clears the
    counters and the flag.
    """

    def __init__(self, L):
        super().__init__({
            "ready": Out(1), "free_pages": Out(range(L.pages + 1)), "out_of_pages": Out(1),
            "vectors_written": Out(COUNTER_BITS), "write_errors": Out(COUNTER_BITS),
            "tokens_read": Out(COUNTER_BITS), "read_errors": Out(COUNTER_BITS),
            "malformed": Out(COUNTER_BITS), "bad_inputs": Out(COUNTER_BITS),
            "config_error": Out(1), "clear": In(1),
        })


class OakenEngine(wiring.Component):
    """The Oaken KV-cache engine: write path, read path, configuration and memory ports.

    See ``docs/engine.md`` for the ports, the memory port protocol and the semantics, which
    :class:`oaken_hw.engine.model.EngineModel` defines bit for bit.

    Parameters
    ----------
    cfg : OakenConfig
        ``quant.scope`` must be ``"layer"``; see :func:`.model.check_engine_config`.

    Attributes
    ----------
    kv_in, read, free, thresholds, rmem_rdata : In(stream.Signature(...))
    write_done, o, read_done, free_done, wmem_cmd, wmem_wdata, rmem_cmd : Out(...)
    status : Out(EngineStatusSignature)
    ports : EnginePorts
        The payload layouts.
    init_cycles : int
        Cycles after reset until ``status.ready``.
    """

    @staticmethod
    def init_cycles_for(cfg):
        """:attr:`init_cycles` of a configuration, without building the engine."""
        L = MMULayout(cfg)
        # the MMU's walks (free list, group state) and the threshold table's, then the
        # cycle of the registered `ready`
        return max(L.pages, L.group_rows, 2 * cfg.model.layers) + 1

    def __init__(self, *, cfg):
        check_engine_config(cfg)
        self.cfg = cfg
        self.ports = P = EnginePorts(cfg)
        self.layout = L = MMULayout(cfg)
        self.init_cycles = self.init_cycles_for(cfg)
        super().__init__({
            "kv_in": In(stream.Signature(P.kv_in)),
            "write_done": Out(stream.Signature(P.write_done)),
            "read": In(stream.Signature(P.read)),
            "o": Out(stream.Signature(P.o)),
            "read_done": Out(stream.Signature(P.read_done)),
            "free": In(stream.Signature(P.free)),
            "free_done": Out(stream.Signature(P.free_done)),
            "thresholds": In(stream.Signature(P.thresholds)),
            "wmem_cmd": Out(stream.Signature(P.mem_cmd)),
            "wmem_wdata": Out(stream.Signature(P.mem_wdata)),
            "rmem_cmd": Out(stream.Signature(P.mem_cmd)),
            "rmem_rdata": In(stream.Signature(P.mem_rdata)),
            "status": Out(EngineStatusSignature(L)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        hv = head_view_config(cfg)
        m = Module()
        m.submodules.table = table = ThresholdTable(layers=cfg.model.layers, read_ports=2)
        m.submodules.quant = quant = QuantEngine(cfg=cfg, table="external")
        m.submodules.dequant = dq = DequantEngine(cfg=hv, table="external")
        m.submodules.mmu = mmu = MMU(cfg=cfg)
        m.submodules.write_path = wp = WritePath(
            cfg=cfg, dense_layout=quant.dense_layout, sparse_layout=quant.sparse_layout,
            meta_layout=quant.meta_layout)
        m.submodules.read_path = rp = ReadPath(
            cfg=cfg, meta_layout=meta_layout(hv), dense_layout=dense_layout(hv),
            sparse_layout=sparse_layout(hv))

        st = self.status
        # `ready` gates every input handshake, so it comes from a register: combined from
        # the MMU's and the table's `ready` (both stay high once up), it was the start of
        # the engine's critical path at 73.4 MHz (free list -> input handshake -> the
        # quantizer's threshold table read)
        ready = Signal()
        m.d.sync += ready.eq(mmu.ready & table.ready)
        m.d.comb += st.ready.eq(ready)

        # configuration
        wiring.connect(m, wiring.flipped(self.thresholds), table.write)
        wiring.connect(m, quant.table, table.read[0])
        wiring.connect(m, dq.table, table.read[1])

        # write path; nothing is taken in while the memories initialise
        m.d.comb += [
            quant.i.valid.eq(self.kv_in.valid & ready),
            quant.i.payload.eq(self.kv_in.payload),
            self.kv_in.ready.eq(quant.i.ready & ready),
        ]
        wiring.connect(m, quant.dense, wp.dense)
        wiring.connect(m, quant.sparse, wp.sparse)
        wiring.connect(m, quant.meta, wp.meta)
        wiring.connect(m, wp.append, mmu.append)
        # The MMU's records reach both paths through a register slice (a skid buffer): the
        # MMU forms them combinationally from its state (slot, page, offset), and into the
        # paths' record FIFOs (LUT RAM write data) that was the engine's critical path at
        # 89.2 MHz (the slot register `j` -> the record mux -> the write path's FIFO,
        # 11.2 ns, 8.8 of it routing between the blocks). Its `ready` is a register too:
        # the read records' `ready` steps the MMU's table addresses.
        m.submodules.wr_records = wr_records = StreamRegister(record_layout(self.layout))
        m.submodules.rd_records = rd_records = StreamRegister(record_layout(self.layout))
        wiring.connect(m, mmu.wr_out, wr_records.i)
        wiring.connect(m, wr_records.o, wp.records)
        wiring.connect(m, wp.wmem_cmd, wiring.flipped(self.wmem_cmd))
        wiring.connect(m, wp.wmem_wdata, wiring.flipped(self.wmem_wdata))
        wiring.connect(m, wp.done, wiring.flipped(self.write_done))

        # read path and frees
        m.d.comb += [
            rp.req.valid.eq(self.read.valid & ready),
            rp.req.payload.eq(self.read.payload),
            self.read.ready.eq(rp.req.ready & ready),
            rp.free.valid.eq(self.free.valid & ready),
            rp.free.payload.eq(self.free.payload),
            self.free.ready.eq(rp.free.ready & ready),
        ]
        # the read path's commands reach the MMU through a one-entry FIFO, a register: its
        # state machine drives them, and straight into the MMU's group-state and table
        # reads they were the engine's critical path at 81.2 MHz (the read path's state ->
        # the dense table's address). One command per request range: a cycle, and a
        # command every other cycle at most, are nothing beside a range's records. At
        # depth 1 its `w_rdy` is the register's emptiness alone, so no path runs from the
        # MMU's `cmd.ready` back into the read path's state machine.
        m.submodules.mmu_cmd = cmd_q = SyncFIFOBuffered(
            width=len(mmu.cmd.payload.as_value()), depth=1)
        m.d.comb += [cmd_q.w_en.eq(rp.cmd.valid), cmd_q.w_data.eq(rp.cmd.payload),
                     rp.cmd.ready.eq(cmd_q.w_rdy),
                     mmu.cmd.valid.eq(cmd_q.r_rdy), mmu.cmd.payload.eq(cmd_q.r_data),
                     cmd_q.r_en.eq(mmu.cmd.ready)]
        wiring.connect(m, mmu.rd_out, rd_records.i)
        wiring.connect(m, rd_records.o, rp.records)
        wiring.connect(m, rp.rmem_cmd, wiring.flipped(self.rmem_cmd))
        wiring.connect(m, wiring.flipped(self.rmem_rdata), rp.rmem_rdata)
        # ... and its beats reach the dequantizer through register slices: the
        # dequantizer's `ready`s ran into the read path's buffers (their levels), its credit
        # flags and the sparse framing queue, the read path's latest endpoints at 94.7 MHz
        # (the zero inserter's `ready` -> `meta_ok`, 10.55 ns, 8.2 of it routing)
        for name in ("meta", "dense", "sparse"):
            src, dst = getattr(rp, name), getattr(dq, name)
            m.submodules[f"rd_{name}"] = slice_ = StreamRegister(src.payload.shape())
            wiring.connect(m, src, slice_.i)
            wiring.connect(m, slice_.o, dst)
        wiring.connect(m, dq.o, wiring.flipped(self.o))
        out_token = self.o.valid & self.o.ready & self.o.payload.last
        m.d.comb += rp.vector_done.eq(out_token)
        wiring.connect(m, rp.done, wiring.flipped(self.read_done))
        wiring.connect(m, rp.free_done, wiring.flipped(self.free_done))

        # status
        m.d.comb += [
            st.free_pages.eq(mmu.free_pages), st.out_of_pages.eq(mmu.out_of_pages),
            st.bad_inputs.eq(quant.status.bad_count), st.config_error.eq(table.error),
            quant.status.clear.eq(st.clear), dq.status.clear.eq(st.clear),
            table.clear_error.eq(st.clear),
            st.malformed.eq(dq.status.malformed),
        ]
        full = (1 << COUNTER_BITS) - 1
        events = [
            (st.vectors_written, self.write_done.valid & self.write_done.ready
             & (self.write_done.payload.status == Status.OK)),
            (st.write_errors, self.write_done.valid & self.write_done.ready
             & (self.write_done.payload.status != Status.OK)),
            (st.tokens_read, out_token),
            (st.read_errors, self.read_done.valid & self.read_done.ready
             & (self.read_done.payload.status != Status.OK)),
        ]
        for counter, event in events:
            with m.If(st.clear):
                m.d.sync += counter.eq(0)
            with m.Elif(event & (counter != full)):
                m.d.sync += counter.eq(counter + 1)
        return m
