/*-------------------------------------------------------------------------
 * SinvalQueue.Cleanup.cs
 *   The shared invalidation queue's cleanup: advancing minMsgNum, resetting
 *   readers that fell off, the threshold for the next cleanup, wraparound
 *   of the message numbers, and the catch-up signal to the slowest reader.
 *
 * NOTES
 *   Cleanup (SICleanupQueue), with both locks exclusive. The new minMsgNum
 *   is the smallest nextMsgNum of the active, not reset, not send-only
 *   readers. A reader more than MaxNumMessages - minFree behind is reset
 *   instead of counted, which is what makes room. nextThreshold becomes
 *   CleanupMin, or the live count rounded up to the next CleanupQuantum, so
 *   cleanups stay rare while readers keep up. The furthest-behind reader
 *   that is more than SigThreshold behind and not yet signaled is marked
 *   signaled and, after both locks are released (the signal is slow and
 *   needs no lock), sent the catch-up signal (CatchupSignal; the
 *   supervisor wires it to ProcSignal's catch-up interrupt). When that
 *   reader has caught up (ReceiveAll), it runs the cleanup once more, which
 *   signals the next slowest: the signal is passed along reader to reader
 *   ("daisy chain") instead of waking everybody at once.
 *
 *   Wraparound. When minMsgNum reaches MsgNumWraparound, the cleanup
 *   subtracts it from minMsgNum, maxMsgNum and every active reader's
 *   nextMsgNum. It is a multiple of the ring size, so ring positions do not
 *   move; readers are excluded (ReadLock exclusive) while it happens.
 *
 *   Mirrors src/backend/storage/ipc/sinvaladt.c (SICleanupQueue).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;
using PgIpc.Sync;
using static PgIpc.Sinval.SinvalConstants;

namespace PgIpc.Sinval;

unsafe partial class SinvalQueue
{
    // ------------------------------------------------------------------
    // Cleanup
    // ------------------------------------------------------------------

    /// <summary>
    /// SICleanupQueue: recomputes minMsgNum, resets readers more than MaxNumMessages - <paramref name="minFree"/>
    /// behind, reduces the counters at wraparound, sets nextThreshold and signals the slowest reader past
    /// SigThreshold. With <paramref name="callerHasWriteLock"/> the caller holds SInvalWriteLock and holds it again
    /// on return (it is released while the signal is sent).
    /// </summary>
    internal void CleanupQueue(Participant me, bool callerHasWriteLock, int minFree)
    {
        SISegHeader* seg = _seg;
        if (!callerHasWriteLock)
            _writeLock->Acquire(me, LWLockMode.Exclusive);
        _readLock->Acquire(me, LWLockMode.Exclusive);

        int min = seg->MaxMsgNum;
        int minsig = min - SigThreshold;
        int lowbound = min - MaxNumMessages + minFree;
        int needSig = -1;
        int last = seg->LastBackend;
        for (int i = 0; i < last; i++)
        {
            ProcState* s = _states + i;
            if (s->Pid == 0 || s->ResetState != 0 || s->SendOnly != 0)
                continue;
            if (IsStale(i, s))
            {
                // Its participant left without unregistering: it no longer holds the queue back. Release; pairs
                // with the acquire load in GetStatistics.
                Volatile.Write(ref s->Pid, 0);
                continue;
            }
            int n = s->NextMsgNum;
            if (n < lowbound)
            {
                // Fell off the ring: it will be told at its next read.
                s->ResetState = 1;
                seg->ResetsIssued++;
                continue;
            }
            if (n < min)
                min = n;
            // The furthest-behind reader past the signal threshold that has not been signalled yet.
            if (n < minsig && s->Signaled == 0)
            {
                minsig = n;
                needSig = i;
            }
        }
        seg->MinMsgNum = min;

        if (min >= MsgNumWraparound)
        {
            // Readers are excluded (ReadLock exclusive) and inserters too (WriteLock): no spinlock needed.
            seg->MinMsgNum -= MsgNumWraparound;
            seg->MaxMsgNum -= MsgNumWraparound;
            for (int i = 0; i < last; i++)
                if (_states[i].Pid != 0)
                    _states[i].NextMsgNum -= MsgNumWraparound;
        }

        int numMsgs = seg->MaxMsgNum - seg->MinMsgNum;
        seg->NextThreshold = numMsgs < CleanupMin ? CleanupMin : (numMsgs / CleanupQuantum + 1) * CleanupQuantum;

        if (needSig < 0)
        {
            _readLock->Release(me);
            if (!callerHasWriteLock)
                _writeLock->Release(me);
            return;
        }

        ProcState* target = _states + needSig;
        int pid = target->Pid;
        // Release; pairs with the acquire load in CatchupPending.
        Volatile.Write(ref target->Signaled, 1);
        seg->SignalsSent++;
        // Signalling is slow and needs neither lock.
        _readLock->Release(me);
        _writeLock->Release(me);
        try
        {
            _catchupSignal?.Invoke(needSig, pid);
        }
        finally
        {
            if (callerHasWriteLock)
                _writeLock->Acquire(me, LWLockMode.Exclusive);
        }
    }
}
