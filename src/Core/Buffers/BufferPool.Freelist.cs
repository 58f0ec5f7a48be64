/*-------------------------------------------------------------------------
 * BufferPool.Freelist.cs
 *   Buffer replacement: the free list, the clock sweep, ring strategies
 *   (BufferAccessStrategy), and the strategy control's hooks for the
 *   background writer (StrategySyncStart, StrategyNotifyBgWriter).
 *
 * NOTES
 *   StrategyGetBuffer returns a victim with refcount 0 and its header
 *   locked: from the caller's ring if it has one and the ring's buffer is
 *   unpinned and unused by others since; else from the free list (buffers
 *   never used or given back, popped under the strategy spinlock); else by
 *   the clock sweep, which skips pinned buffers, decrements the usage count
 *   of the others and takes the first at zero. A full round of the hand
 *   finding only pinned buffers is NoUnpinnedBuffersException.
 *
 *   The clock hand (NextVictimBuffer) only grows and is taken modulo the
 *   number of buffers; the allocator that takes it past the end folds it
 *   back and counts a complete pass under the strategy spinlock, so that
 *   StrategySyncStart reads hand and passes consistently.
 *
 *   A hibernating background writer leaves its procno in the strategy
 *   control; the next allocation clears it and sets its latch.
 *
 *   Mirrors src/backend/storage/buffer/freelist.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Buffers;

public sealed unsafe partial class BufferPool
{
    /// <summary>
    /// Where allocators wake a hibernating background writer (StrategyNotifyBgWriter): its procno, or
    /// <see cref="PgProc.InvalidProcNumber"/> to stop. The next buffer allocation clears it and sets that latch.
    /// </summary>
    internal void StrategyNotifyBgWriter(int procno)
    {
        if (procno != PgProc.InvalidProcNumber && (uint)procno >= (uint)_procs.MaxProcs)
            throw new ArgumentOutOfRangeException(nameof(procno), procno, $"procno must be -1 or 0..{_procs.MaxProcs - 1}");
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        Volatile.Write(ref _ctl->BgwProcNo, procno);
        SLock.Release(ref _ctl->Lock);
    }

    /// <summary>The hibernating background writer the next allocation will wake, or -1 (unlocked read).</summary>
    internal int HibernatingBgWriter => Volatile.Read(ref _ctl->BgwProcNo);

    /// <summary>
    /// Where the clock hand is (StrategySyncStart): its buffer index, how many times it went round, and the
    /// allocations since the previous call (the counter is reset).
    /// </summary>
    internal int StrategySyncStart(out uint completePasses, out uint numBufferAllocs)
    {
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        uint next = Volatile.Read(ref _ctl->NextVictimBuffer);
        int result = (int)(next % (uint)_n);
        completePasses = _ctl->CompletePasses + next / (uint)_n;
        numBufferAllocs = Interlocked.Exchange(ref _ctl->NumBufferAllocs, 0);
        SLock.Release(ref _ctl->Lock);
        return result;
    }

    /// <summary>A victim with refcount 0, returned with its header locked; <paramref name="st"/> is its locked state.</summary>
    private int StrategyGetBuffer(BufferAccessStrategy? strategy, out uint st)
    {
        if (strategy is not null)
        {
            int r = GetBufferFromRing(strategy, out st);
            if (r >= 0)
                return r;
        }
        // A hibernating background writer asked to be woken by the next allocation (StrategyNotifyBgWriter).
        // Unlocked read; the clear is a plain store as in freelist.c: two allocators may both set the latch.
        int bgw = Volatile.Read(ref _ctl->BgwProcNo);
        if (bgw != PgProc.InvalidProcNumber)
        {
            Volatile.Write(ref _ctl->BgwProcNo, PgProc.InvalidProcNumber);
            Latch.Latches.SetLatch(_procs, bgw);
        }
        Interlocked.Increment(ref _ctl->NumBufferAllocs);

        // The free list first (buffers never used, or given back). Unlocked peek; the lock decides.
        while (Volatile.Read(ref _ctl->FirstFreeBuffer) >= 0)
        {
            SLock.Acquire(ref _ctl->Lock, "buffer strategy");
            int id = _ctl->FirstFreeBuffer;
            if (id < 0)
            {
                SLock.Release(ref _ctl->Lock);
                break;
            }
            _ctl->FirstFreeBuffer = _descs[id].FreeNext;
            _descs[id].FreeNext = BufferDesc.FreeNextNotInList;
            SLock.Release(ref _ctl->Lock);
            st = LockBufHdr(id);
            if (S.RefCount(st) == 0 && S.UsageCount(st) == 0)
            {
                AddBufferToRing(strategy, id);
                return id;
            }
            UnlockBufHdr(id, st);
        }

        // The clock sweep: skip pinned buffers, age the others, take the first at usage count 0.
        int tries = _n;
        while (true)
        {
            int id = ClockSweepTick();
            st = LockBufHdr(id);
            if (S.RefCount(st) == 0)
            {
                if (S.UsageCount(st) == 0)
                {
                    AddBufferToRing(strategy, id);
                    return id;
                }
                st -= S.UsageCountOne;
                tries = _n;
            }
            else if (--tries == 0)
            {
                UnlockBufHdr(id, st);
                throw new NoUnpinnedBuffersException(_n);
            }
            UnlockBufHdr(id, st);
        }
    }

    /// <summary>Advances the clock hand; folds the counter and counts a pass when it wraps.</summary>
    private int ClockSweepTick()
    {
        uint victim = Interlocked.Increment(ref _ctl->NextVictimBuffer) - 1;
        if (victim >= (uint)_n)
        {
            uint original = victim;
            victim %= (uint)_n;
            if (victim == 0)
            {
                // We took the hand past the end: fold it back so it never overflows, and count the pass,
                // under the lock so StrategySyncStart sees the two consistently.
                SLock.Acquire(ref _ctl->Lock, "buffer strategy");
                uint expected = original + 1;
                while (true)
                {
                    uint wrapped = expected % (uint)_n;
                    uint seen = Interlocked.CompareExchange(ref _ctl->NextVictimBuffer, wrapped, expected);
                    if (seen == expected)
                    {
                        _ctl->CompletePasses++;
                        break;
                    }
                    expected = seen;
                }
                SLock.Release(ref _ctl->Lock);
            }
        }
        return (int)victim;
    }

    private int GetBufferFromRing(BufferAccessStrategy strategy, out uint st)
    {
        if (++strategy.Current >= strategy.Ring.Length)
            strategy.Current = 0;
        int id = strategy.Ring[strategy.Current];
        if (id < 0)
        {
            st = 0;
            return -1;
        }
        st = LockBufHdr(id);
        // Reuse only if nobody else pinned it and nobody else used it since we did.
        if (S.RefCount(st) == 0 && S.UsageCount(st) <= 1)
            return id;
        UnlockBufHdr(id, st);
        return -1;
    }

    private static void AddBufferToRing(BufferAccessStrategy? strategy, int id)
    {
        if (strategy is not null)
            strategy.Ring[strategy.Current] = id;
    }

    /// <summary>Puts a buffer at the head of the free list (StrategyFreeBuffer).</summary>
    private void StrategyFreeBuffer(int id)
    {
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        if (_descs[id].FreeNext == BufferDesc.FreeNextNotInList)
        {
            _descs[id].FreeNext = _ctl->FirstFreeBuffer;
            if (_ctl->FirstFreeBuffer < 0)
                _ctl->LastFreeBuffer = id;
            _ctl->FirstFreeBuffer = id;
        }
        SLock.Release(ref _ctl->Lock);
    }
}
