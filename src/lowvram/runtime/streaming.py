"""Stream a module's weights from host memory, block by block, with the next block prefetched.

Hand-written because no library does the combination the plan needs: diffusers' group offloading
streams every group every step and keeps a second pinned copy of the model (host RAM ~2x model), and
accelerate's hooks copy synchronously. Here:
- the units are `structure.streamable_units` — the same ones the planner sized;
- the plan's resident units (the first K, or the indices it spread among the streamed ones so copies
  overlap compute, plan/interleave.py) live on the device for good; units whose parameters
  are shared with another unit (tied embeddings) and the own parameters of split parents are resident
  too (they are small, and used across units);
- every other unit keeps ONE host copy (pinned, up to a cap, pageable beyond) and is copied into one of
  `buffers` reusable device buffers (two unless the plan chose more) before it runs: while one unit
  computes, the copies of the next `buffers - 1` are issued on a side CUDA stream, ordered with events
  (never a global synchronize); a copy waits only for the unit that last used its buffer;
- a pinned unit's host tensors are laid out in one exactly-sized page-locked buffer (host_buffer.py),
  at the offsets they have in the device slot, so the unit moves in ONE transfer instead of one per
  tensor (SDXL's 4 GiB plan streams 868 tensors a step, 537 of them under 1 MiB; each copy has a fixed
  cost of launching and a DMA ramp-up), and no host RAM is lost to torch's power-of-two pinned rounding;
  the laid-out buffers outlive the engine (`host_buffers`), so placing the component again copies nothing;
- the order in which units run is recorded on the first call, so models whose forward order differs
  from their creation order prefetch correctly; a unit called out of order is loaded synchronously;
- the order wraps around: while the last unit of a call runs, the first streamed unit of the next call
  (the next step's) is already being copied, so a step never starts by waiting for its first copy;
- a unit whose computation is skipped (`skip_unit`: step caching skips every block after the first on
  a cached step) is neither copied nor waited for, and the prefetch goes to the next unit that runs; a
  call that jumps ahead in the recorded order (the skipped blocks' sub-units never run) resynchronises;
- units whose host copy is not pinned (past the pinned-RAM cap, or memory-mapped from disk) go through
  two reused pinned staging buffers (buffers.StagingBuffers), filled by one worker thread, so their
  device copy is asynchronous too instead of blocking the thread that issues the compute.
With device = CPU the same code path runs (copies into the pool still happen, synchronously), which is
how the CPU tests check prefetch order, eviction and accounting.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..contract import STAGING_BUFFERS, STREAM_BUFFERS
from ..structure import split_parents, streamable_units
from .accountant import BudgetAccountant
from .buffers import BufferPool, StagingBuffers, align
from .host_buffer import HostBuffer

# STAGING_BUFFERS (contract.py): one being filled from pageable memory while the other is read by the device copy


@dataclass
class _Slot:
    owner: int | None = None  # unit index whose weights are in the slot
    free_event: object = None  # recorded on the compute stream when its last user finished


@dataclass
class _Unit:
    idx: int
    name: str
    module: torch.nn.Module
    tensors: list = field(default_factory=list)  # (owner module, "param"/"buffer", name, host tensor, offset)
    nbytes: int = 0  # its slot footprint (tensors aligned)
    host_bytes: int = 0  # bytes one copy moves
    resident: bool = False
    slot: int | None = None
    ready_event: object = None
    running: bool = False
    pinned: bool = False  # every host tensor of the unit is in pinned memory
    pending: Future | None = None  # an in-flight staged copy; resolves to its ready event
    host: HostBuffer | None = None  # the unit's host tensors laid out as in its slot: one transfer moves it
    skipped: bool = False  # this call of the unit is skipped (step caching): no weights were placed
    # (buffer kind, index) -> its tensors' typed views into that device slot or staging buffer, made once:
    # making a view costs ~3-7 us, and SDXL's 4 GiB plan points 868 tensors at a slot every step
    views: dict = field(default_factory=dict)


@dataclass
class StreamStats:
    copies: int = 0  # unit copies host -> device buffer
    bytes_copied: int = 0
    sync_loads: int = 0  # units that were not prefetched in time (out-of-order calls)
    wraparound: int = 0  # next-call prefetches issued while the last unit of a call ran
    staged: int = 0  # unit copies that went through the pinned staging buffers
    transfers: int = 0  # host -> device copy operations issued (one per laid-out unit, else one per tensor)
    skipped: int = 0  # unit calls whose computation was skipped, so nothing was copied for them
    resyncs: int = 0  # calls that jumped ahead in the recorded order (skipped sub-units) and were followed
    order: list = field(default_factory=list)  # recorded unit order (names)


class StreamingEngine:
    """Apply with `engine = StreamingEngine(module, device, resident_units, accountant).apply()`."""

    def __init__(self, module: torch.nn.Module, device: torch.device | str, resident_units: int | tuple[int, ...],
                 accountant: BudgetAccountant, owner: str = "component", pin_memory: bool | None = None,
                 pinned_cap_bytes: int | None = None, stage_pageable: bool | None = None,
                 wraparound: bool = True, coalesce: bool | None = None,
                 host_buffers: dict[str, HostBuffer] | None = None,
                 skip_unit: Callable[[torch.nn.Module], bool] | None = None, buffers: int = STREAM_BUFFERS) -> None:
        if buffers < 2:
            raise ValueError(f"streaming needs at least 2 device buffers (one computes while the next is copied), not {buffers}")
        self.module = module
        self.device = torch.device(device)
        self.resident_units = resident_units
        self.accountant = accountant
        self.owner = owner
        self.cuda = self.device.type == "cuda"
        self.pin = self.cuda if pin_memory is None else pin_memory
        self.pinned_cap = pinned_cap_bytes if pinned_cap_bytes is not None else _default_pinned_cap()
        self.pinned_bytes = 0
        # lay each pinned unit out in one buffer (one transfer per unit); False: pin tensor by tensor (A/B benches)
        self.coalesce = self.pin if coalesce is None else coalesce
        # unit name -> its laid-out host buffer; the caller may keep it across engines of the same module
        self.host_buffers = {} if host_buffers is None else host_buffers
        self.skip_unit = skip_unit  # True for a unit module whose computation this call skips
        self.units: list[_Unit] = []
        self.streamed: list[_Unit] = []
        self.stats = StreamStats()
        self._handles: list = []
        self._order: list[int] = []
        self._recording = True
        self._pos = 0
        self._slots = [_Slot() for _ in range(buffers)]
        self._pool: BufferPool | None = None
        self._resident_bytes = 0
        self._host: dict[int, torch.Tensor | None] = {}  # device copy id -> its host tensor (resident units)
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        # stage pageable units through pinned buffers: on CUDA by default; on the CPU only when asked
        # (tests), where the same path runs with plain host buffers
        self.stage_pageable = self.cuda if stage_pageable is None else stage_pageable
        self._staging: StagingBuffers | None = None
        self.wraparound = wraparound  # False: the next call's first unit is fetched only after the call returns (A/B benches)
        self._worker: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ set-up
    def apply(self) -> "StreamingEngine":
        groups, shared = unit_tensors(self.module)
        for i, (name, mod, split_parent, tensors) in enumerate(groups):
            unit = _Unit(i, name, mod, tensors=[[owner_mod, kind, tname, t, 0] for owner_mod, kind, tname, t in tensors])
            unit.resident = split_parent or (i in self.resident_units if isinstance(self.resident_units, tuple)
                                             else i < self.resident_units)
            self.units.append(unit)
        for i in shared:
            self.units[i].resident = True
        # the resident part is one placement, counted once and before any copy: a plan that does not fit
        # fails here with nothing half-placed
        resident_bytes = sum(t.numel() * t.element_size() for u in self.units if u.resident for _, _, _, t, _ in u.tensors)
        if resident_bytes:
            self.accountant.reserve(resident_bytes, self.owner)
            self._resident_bytes = resident_bytes
        for u in self.units:
            if u.resident:
                self._make_resident(u)
            else:
                self._make_streamed(u)
        if self.streamed:
            slot_bytes = max(u.nbytes for u in self.streamed)
            self._pool = BufferPool(slot_bytes, len(self._slots), self.device, self.accountant, f"{self.owner} stream buffers")
            for u in self.streamed:
                # prepend: weights must be in place before any other pre-hook (8-bit dequantisation) reads them
                self._handles.append(u.module.register_forward_pre_hook(self._make_pre(u), prepend=True))
                self._handles.append(u.module.register_forward_hook(self._make_post(u)))
            pageable = [u for u in self.streamed if not u.pinned]
            if self.stage_pageable and pageable:
                self._staging = StagingBuffers(max(u.nbytes for u in pageable), STAGING_BUFFERS, pin=self.cuda)
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lowvram-stage-{self.owner}")
            self._handles.append(self.module.register_forward_pre_hook(self._root_pre))
            self._handles.append(self.module.register_forward_hook(self._root_post))
        return self

    def _make_resident(self, u: _Unit) -> None:
        for entry in u.tensors:
            owner_mod, kind, name, t, _ = entry
            host = t.detach()  # the data itself: `t` may be the Parameter, whose .data is replaced below
            dev = t.detach().to(self.device)  # its bytes were reserved with the whole resident part in apply()
            _set(owner_mod, kind, name, dev)
            entry[3] = dev
            # keep the host copy (the plan counts it in RAM): eviction then re-points the weight at it
            # instead of copying it back from the device
            self._host[id(dev)] = host if host.device.type == "cpu" else None

    def _make_streamed(self, u: _Unit) -> None:
        off = 0
        for entry in u.tensors:
            t = entry[3]
            n = t.numel() * t.element_size()
            entry[4] = off
            off += align(n)
            u.host_bytes += n
        u.nbytes = off
        if self.coalesce and self.pinned_bytes + u.nbytes <= self.pinned_cap:
            self._lay_out(u)
            self.pinned_bytes += u.nbytes
        else:
            for entry in u.tensors:
                owner_mod, kind, name, t, _ = entry
                host = t.detach().to("cpu")  # already on the CPU: no copy (a file mapping stays a mapping)
                n = host.numel() * host.element_size()
                if self.pin and not host.is_pinned() and self.pinned_bytes + n <= self.pinned_cap:
                    host = host.pin_memory()  # replaces the pageable copy: one host copy, never two
                    self.pinned_bytes += n
                _set(owner_mod, kind, name, host)
                entry[3] = host
        u.pinned = u.host.pinned if u.host is not None else all(e[3].is_pinned() for e in u.tensors)
        self.streamed.append(u)

    def _lay_out(self, u: _Unit) -> None:
        """The unit's host copy as one buffer laid out like its slot; its tensors become views into it.
        A buffer an earlier engine laid out for this unit, still holding its tensors, is used as it is."""
        buf = self.host_buffers.get(u.name)
        if buf is None or buf.nbytes != u.nbytes or not all(buf.holds(e[3], e[4]) for e in u.tensors):
            buf = HostBuffer(u.nbytes, pin=self.pin)
            for _, _, _, t, off in u.tensors:
                buf.view(off, t).copy_(t.detach())  # the old copy goes with its last reference: one unit extra at most
            self.host_buffers[u.name] = buf
        for entry in u.tensors:
            owner_mod, kind, name, t, off = entry
            host = buf.view(off, t)
            _set(owner_mod, kind, name, host)
            entry[3] = host
        u.host = buf

    # ------------------------------------------------------------------ hooks
    def _root_pre(self, module, args):
        self._pos = 0

    def _end_recording(self) -> None:
        if self._recording:
            self._recording = False
            self.stats.order = [self.units[i].name for i in self._order]

    def _root_post(self, module, args, output):
        self._end_recording()
        if self._order:  # the next call starts with the same units: fetch them now
            self._pos = 0
            self._prefetch_next(None, next_call=True)

    def _make_pre(self, u: _Unit):
        def pre(module, args):
            if self._order and u.idx == self._order[0] and (self._recording or self._pos >= len(self._order)):
                # a new pass began without going through the root module's forward (e.g. vae.decode)
                self._end_recording()
                self._pos = 0
            if self._recording:
                self._order.append(u.idx)
            else:
                self._follow(u.idx)
            if self.skip_unit is not None and self.skip_unit(module):
                # its computation is skipped this call: its weights are not needed, the next unit that runs is
                u.skipped = True
                self.stats.skipped += 1
                self._prefetch_next(u.idx)
                return
            if u.slot is None:
                if not self._recording:  # the recording call cannot prefetch: it does not know the order yet
                    self.stats.sync_loads += 1
                self._load(u, self._free_slot(keep=set()), sync=True)
            else:
                self._settle(u)
                if self.cuda:
                    torch.cuda.current_stream(self.device).wait_event(u.ready_event)
            for (owner_mod, kind, name, _, _), view in zip(u.tensors, self._views(u, self._pool, u.slot)):
                _set(owner_mod, kind, name, view)
            u.running = True
            self._prefetch_next(u.idx)
        return pre

    def _make_post(self, u: _Unit):
        def post(module, args, output):
            if u.skipped:
                u.skipped = False
                return
            for owner_mod, kind, name, host, off in u.tensors:
                _set(owner_mod, kind, name, host)
            slot = self._slots[u.slot]
            if self.cuda:
                ev = torch.cuda.Event()
                ev.record(torch.cuda.current_stream(self.device))
                slot.free_event = ev
            slot.owner = None
            u.slot = None
            u.running = False
            if self.skip_unit is not None:  # this unit may have decided that what comes next is skipped
                self._prefetch_next(u.idx)
        return post

    def refetch(self) -> None:
        """What runs next may have changed (step caching's first block has just decided): make sure the
        next unit that runs is the one being copied."""
        self._prefetch_next(None)

    def _follow(self, idx: int) -> None:
        """Advance the position in the recorded order past unit `idx`: the expected one, or one further
        ahead (the units between were skipped: their blocks did not run this call). A unit behind the
        position is an out-of-order call, loaded synchronously; the position stays."""
        if self._pos < len(self._order) and self._order[self._pos] == idx:
            self._pos += 1
            return
        try:
            self._pos = self._order.index(idx, self._pos + 1) + 1
            self.stats.resyncs += 1
        except ValueError:
            pass

    def _prefetch_next(self, current: int | None, next_call: bool = False) -> None:
        """Start copying the next units in the recorded order that will run, one per buffer not computing;
        past the call's last unit, the next call's first (wrap-around). Nothing while the order is still
        being recorded. Which units a call skips is known only within that call: the next call's units
        (wrapped around to, or `next_call`: between calls) are all taken to run."""
        if self._recording:
            return
        n = len(self._order)
        keep = {i for i, s in enumerate(self._slots) if s.owner is not None and self.units[s.owner].running}
        ahead = len(self._slots) - 1  # one buffer computes, the others are filled ahead of it
        for step in range(n):
            pos = self._pos + step
            if pos >= n and not self.wraparound:
                return
            idx = self._order[pos % n]
            if idx == current:
                return
            nxt = self.units[idx]
            if self.skip_unit is not None and pos < n and not next_call and self.skip_unit(nxt.module):
                continue
            if nxt.slot is None and pos >= n:
                self.stats.wraparound += 1
            self._prefetch(idx, keep)
            keep.add(nxt.slot)
            ahead -= 1
            if not ahead:
                return

    # ------------------------------------------------------------------ copies
    def _free_slot(self, keep: set[int]) -> int:
        """An empty slot outside `keep` (the running unit's, the ones just prefetched); when there is none,
        one whose prefetched unit is dropped (it is copied again when it runs)."""
        for i, s in enumerate(self._slots):
            if s.owner is None and i not in keep:
                return i
        i = next(i for i, s in enumerate(self._slots) if i not in keep and not self.units[s.owner].running)
        dropped = self.units[self._slots[i].owner]
        self._settle(dropped)  # its staged copy may still be writing the slot
        dropped.slot = None
        self._slots[i].owner = None
        return i

    def _prefetch(self, idx: int, keep: set[int]) -> None:
        u = self.units[idx]
        if u.slot is not None or u.resident:
            return
        self._load(u, self._free_slot(keep), sync=False)

    def _settle(self, u: _Unit) -> None:
        """Wait for `u`'s staged copy, if one is in flight, and take its ready event."""
        if u.pending is not None:
            u.ready_event = u.pending.result()
            u.pending = None

    def _staged_copy(self, u: _Unit, slot: int, free_event) -> object:
        """On the worker thread: the unit's pageable host bytes into a reused staging buffer (a host
        memcpy, off the thread that issues the compute), then one asynchronous copy into its device slot,
        ordered after the slot's previous user. Returns the event that marks the copy done (None on CPU)."""
        st = self._staging.acquire()
        for (_, _, _, host, _), view in zip(u.tensors, self._views(u, self._staging, st)):
            view.copy_(host)
        # the staging buffer is laid out like the slot: one transfer moves the whole unit
        dst, src = self._pool.buffers[slot][:u.nbytes], self._staging.buffers[st][:u.nbytes]
        self.stats.transfers += 1
        if not self.cuda:
            dst.copy_(src)
            self._staging.release(st, None)
            return None
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            if free_event is not None:
                self._stream.wait_event(free_event)
            dst.copy_(src, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self._stream)
        self._staging.release(st, ev)
        return ev

    @staticmethod
    def _views(u: _Unit, buffers, i: int) -> list[torch.Tensor]:
        """`u`'s tensors as typed views into buffer `i` of `buffers` (the device slots or the staging buffers)."""
        key = (id(buffers), i)
        views = u.views.get(key)
        if views is None:
            views = u.views[key] = [buffers.view(i, off, host) for _, _, _, host, off in u.tensors]
        return views

    def _copy_in(self, u: _Unit, slot: int) -> None:
        """Issue the host -> device copy of `u` into `slot` on the current stream."""
        if u.host is not None:  # laid out like the slot: one transfer
            self._pool.buffers[slot][:u.nbytes].copy_(u.host.tensor, non_blocking=self.cuda)
            self.stats.transfers += 1
            return
        for _, _, _, host, off in u.tensors:
            self._pool.view(slot, off, host).copy_(host, non_blocking=self.cuda)
        self.stats.transfers += len(u.tensors)

    def _load(self, u: _Unit, slot: int, sync: bool) -> None:
        s = self._slots[slot]
        s.owner = u.idx
        u.slot = slot
        if not sync and self._staging is not None and not u.pinned:
            u.pending = self._worker.submit(self._staged_copy, u, slot, s.free_event)
            self.stats.staged += 1
        elif self.cuda and not sync:
            stream = self._stream
            if s.free_event is not None:
                stream.wait_event(s.free_event)
            with torch.cuda.stream(stream):
                self._copy_in(u, slot)
                ev = torch.cuda.Event()
                ev.record(stream)
            u.ready_event = ev
        else:
            if self.cuda and s.free_event is not None:
                torch.cuda.current_stream(self.device).wait_event(s.free_event)
            self._copy_in(u, slot)
            if self.cuda:
                ev = torch.cuda.Event()
                ev.record(torch.cuda.current_stream(self.device))
                u.ready_event = ev
        self.stats.copies += 1
        self.stats.bytes_copied += u.host_bytes

    # ------------------------------------------------------------------ teardown
    @property
    def streamed_bytes(self) -> int:
        return sum(u.host_bytes for u in self.streamed)

    def remove(self) -> None:
        """Undo: hooks off, buffers freed, resident weights back to host memory."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for u in self.units:
            if u.pending is not None:  # let an in-flight staged copy finish before its buffers go
                u.pending.result()
                u.pending = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._stream is not None:  # no copy may still read a host buffer or write a slot being freed
            self._stream.synchronize()
        if self._staging is not None:
            self._staging.release_all()
        self._staging = None
        for u in self.units:
            for entry in u.tensors:
                owner_mod, kind, name, t, _ = entry
                # resident weights go back to host memory; streamed ones point at their host copy again
                # (a call that failed half-way, e.g. out of memory, left them on buffer views)
                if u.resident:
                    host = self._host.get(id(t))
                    t = host if host is not None else t.to("cpu")
                _set(owner_mod, kind, name, t)
                entry[3] = t  # no reference to the device copy may outlive the engine's hold on it
        self._host = {}
        for u in self.units:
            u.views = {}
        if self._pool is not None:
            self._pool.free()
        if self._resident_bytes:
            self.accountant.release(self._resident_bytes, self.owner)


def unit_tensors(module: torch.nn.Module):
    """The module's parameters and buffers grouped by streamable unit, each tensor in exactly one unit.

    Returns ([(unit name, unit module, is split parent, [(owner module, kind, name, tensor)])], shared),
    `shared` being the indices of units holding a tensor also used outside them (tied weights): those
    stay resident. A split parent's group is its own tensors only; its children are units of their own.
    """
    specs = streamable_units(module)
    names = [u.name for u in specs]
    owners: dict[int, int] = {}  # tensor id -> first unit that holds it
    shared: set[int] = set()
    # tied weights (T5's shared embedding is also encoder.embed_tokens): used outside their unit
    seen_ids: set[int] = set()
    tied: set[int] = set()
    for _, p in module.named_parameters(remove_duplicate=False):
        (tied if id(p) in seen_ids else seen_ids).add(id(p))
    groups = []
    parents = split_parents(names)
    for i, name in enumerate(names):
        mod = module if name == "<root>" else module.get_submodule(name)
        split_parent = i in parents
        tensors = []
        for owner_mod, kind, tname, t in _tensors_of(mod, recurse=not split_parent):
            if id(t) in owners and owners[id(t)] != i:
                shared.add(owners[id(t)])
                shared.add(i)
                continue
            owners[id(t)] = i
            if id(t) in tied:
                shared.add(i)
            tensors.append((owner_mod, kind, tname, t))
        groups.append((name, mod, split_parent, tensors))
    return groups, shared


def _tensors_of(mod: torch.nn.Module, recurse: bool):
    mods = mod.modules() if recurse else [mod]
    for m in mods:
        for name, p in m._parameters.items():
            if p is not None:
                yield m, "param", name, p
        for name, b in m._buffers.items():
            if b is not None:
                yield m, "buffer", name, b


def _set(m: torch.nn.Module, kind: str, name: str, t: torch.Tensor) -> None:
    if kind == "param":
        m._parameters[name].data = t
    else:
        m._buffers[name] = t


def _default_pinned_cap() -> int:
    import psutil

    from ..contract import PINNED_RAM_FRACTION

    return int(psutil.virtual_memory().total * PINNED_RAM_FRACTION)
