/*-------------------------------------------------------------------------
 * BufferPool.Pin.cs
 *   Pins and the buffer header lock: PinBuffer / UnpinBuffer on the packed
 *   state word, the header-lock bit (LockBufHdr / UnlockBufHdr), and the
 *   wake-up of a cleanup-lock waiter.
 *
 * NOTES
 *   A pin is a CAS on the state word adding one to the refcount (and to
 *   the usage count, capped, or only from zero under a ring strategy); the
 *   participant's own further pins are counted in its PrivateRefCount only,
 *   so a hit costs one CAS. The header lock is a bit of the same word, set
 *   by an atomic OR and released by a release store of the new state; a
 *   pinner that sees the bit set waits for it to clear.
 *
 *   LockBufferForCleanup (BufferPool.cs) registers the participant as the
 *   buffer's pin-count waiter (flag and procno in the descriptor) and sleeps
 *   on its latch; the unpin that leaves a single pin clears the flag and sets
 *   the latch (WakePinCountWaiter).
 *
 *   Pins of a dead process: the shared refcount counts pinning participants.
 *   A participant that leaves (Dispose, or its slot released by this
 *   process) has its pins dropped (DropLeftoverPins, as resource-owner
 *   cleanup at exit). A process killed with SIGKILL cannot do that: its pins
 *   stay in the refcounts until shared memory is rebuilt, as in PostgreSQL,
 *   where the postmaster treats the death as a crash and reinitialises
 *   (Cluster's crash restart). Dropping them from another process would need
 *   every pinner's private counts in shared memory (which PrivateRefCount
 *   keeps local so that a hit costs one CAS), and a dead process may also
 *   have died holding a header or content lock, so its buffers are not safe
 *   to reuse anyway.
 *
 *   Mirrors the pin and header-lock parts of
 *   src/backend/storage/buffer/bufmgr.c and include/storage/buf_internals.h.
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
    /// <summary>PinBuffer: one more pin; the first by this participant bumps the shared refcount and usage count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Pin(PrivateRefCount refs, int id, BufferAccessStrategy? strategy)
    {
        BufferDesc* d = _descs + id;
        if (refs.Get(id) > 0)
        {
            refs.Add(id, 1);
            return (Volatile.Read(ref d->StateWord) & S.Valid) != 0;
        }
        uint old = Volatile.Read(ref d->StateWord);
        while (true)
        {
            if ((old & S.Locked) != 0)
                old = WaitBufHdrUnlocked(id);
            uint nw = old + S.RefCountOne;
            int usage = S.UsageCount(old);
            if (strategy is null ? usage < S.MaxUsageCount : usage == 0)
                nw += S.UsageCountOne;
            // Full barrier; pairs with UnlockBufHdr's release store and other pinners' CAS.
            uint seen = Interlocked.CompareExchange(ref d->StateWord, nw, old);
            if (seen == old)
            {
                refs.Add(id, 1);
                return (nw & S.Valid) != 0;
            }
            old = seen;
        }
    }

    private void Unpin(PrivateRefCount refs, int id)
    {
        int n = refs.Add(id, -1);
        if (n < 0)
            throw new BufferUsageException($"buffer {id + 1} is not pinned by participant {refs.Owner.ProcNumber}");
        if (n == 0)
            UnpinShared(id);
    }

    private void UnpinShared(int id)
    {
        BufferDesc* d = _descs + id;
        uint old = Volatile.Read(ref d->StateWord);
        while (true)
        {
            if ((old & S.Locked) != 0)
                old = WaitBufHdrUnlocked(id);
            if (S.RefCount(old) == 0)
                ThrowRefCountUnderflow(id); // this participant holds a pin (its private count said so): the shared word was overwritten
            uint nw = old - S.RefCountOne;
            uint seen = Interlocked.CompareExchange(ref d->StateWord, nw, old);
            if (seen == old)
            {
                // The cleanup waiter wants to be alone with the buffer: wake it when one pin (its own) is left.
                if ((nw & S.PinCountWaiter) != 0 && S.RefCount(nw) == 1)
                    WakePinCountWaiter(id);
                return;
            }
            old = seen;
        }
    }

    /// <summary>Nothing has been changed in the shared word: an error for the caller rather than a PANIC.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowRefCountUnderflow(int id)
        => throw new ShmemCorruptException($"BufferDesc {id + 1} ({_descs[id].Tag})", "shared refcount",
            "is 0 while this participant holds a pin on the buffer: the state word was overwritten");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WakePinCountWaiter(int id)
    {
        uint st = LockBufHdr(id);
        int waiter = PgProc.InvalidProcNumber;
        if ((st & S.PinCountWaiter) != 0 && S.RefCount(st) == 1)
        {
            waiter = _descs[id].WaitBackendProcNo;
            st &= ~S.PinCountWaiter;
        }
        UnlockBufHdr(id, st);
        // The flag is cleared before the latch is set: the waiter resets its latch, then re-checks the flag.
        if (waiter != PgProc.InvalidProcNumber)
            Latch.Latches.SetLatch(_procs, waiter);
    }

    /// <summary>LockBufHdr: sets the header-lock bit, spinning with the spinlock schedule; returns the state (with the bit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint LockBufHdr(int id)
    {
        ref uint state = ref _descs[id].StateWord;
        // Full barrier (acquire side); pairs with UnlockBufHdr's release store.
        uint old = Interlocked.Or(ref state, S.Locked);
        return (old & S.Locked) == 0 ? old | S.Locked : LockBufHdrSlow(ref state);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static uint LockBufHdrSlow(ref uint state)
    {
        var delay = new SLock.SpinDelay("buffer header lock");
        while (true)
        {
            if ((Volatile.Read(ref state) & S.Locked) == 0)
            {
                uint old = Interlocked.Or(ref state, S.Locked);
                if ((old & S.Locked) == 0)
                {
                    delay.Finish();
                    return old | S.Locked;
                }
            }
            delay.Perform();
        }
    }

    /// <summary>UnlockBufHdr: stores the new state without the lock bit (release; pairs with LockBufHdr).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void UnlockBufHdr(int id, uint state) => Volatile.Write(ref _descs[id].StateWord, state & ~S.Locked);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint WaitBufHdrUnlocked(int id)
    {
        ref uint state = ref _descs[id].StateWord;
        var delay = new SLock.SpinDelay("buffer header lock");
        uint s;
        while (((s = Volatile.Read(ref state)) & S.Locked) != 0)
            delay.Perform();
        delay.Finish();
        return s;
    }
}
