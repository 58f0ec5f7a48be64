/*-------------------------------------------------------------------------
 * SinvalQueue.Messages.cs
 *   Sending and receiving on the shared invalidation queue: the insert of
 *   a batch in chunks, the reader's copy of the messages it has not seen,
 *   and ReceiveAll, which drains them and passes the catch-up signal on.
 *
 * NOTES
 *   Insert (SIInsertDataEntries). Messages go in chunks of WriteQuantum
 *   under SInvalWriteLock, so one large batch cannot hold the lock for long.
 *   Before a chunk, if the ring lacks room for it or holds at least
 *   nextThreshold messages, the cleanup runs (with minFree = the chunk).
 *   The chunk is copied into the ring, then maxMsgNum is advanced under
 *   msgnumLock (publishing the payload), then every reader's hasMessages is
 *   set.
 *
 *   Read (SIGetDataEntries). A reader first looks at its own hasMessages
 *   without any lock: false means nothing new (a message sent concurrently
 *   is as good as one sent just after the call). Otherwise it takes
 *   SInvalReadLock shared, clears hasMessages, then reads maxMsgNum under
 *   msgnumLock. The order matters: an inserter stores maxMsgNum and then
 *   sets hasMessages, and the reader clears hasMessages and then (after a
 *   full barrier) loads maxMsgNum, so either the reader sees the new
 *   maxMsgNum or the flag stays set for its next call; nothing is lost. A
 *   reset reader is moved to maxMsgNum and gets -1. Otherwise it copies up
 *   to the buffer's length; if that did not reach maxMsgNum it sets
 *   hasMessages again, else it clears its signaled flag.
 *
 *   Hot paths (SendMessages, GetMessages, ReceiveAll) allocate nothing: the
 *   receive batch lives in a per-slot process-local buffer made at
 *   RegisterBackend.
 *
 *   Mirrors src/backend/storage/ipc/sinvaladt.c (SIInsertDataEntries,
 *   SIGetDataEntries) and sinval.c (ReceiveSharedInvalidMessages).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Proc;
using PgIpc.Sync;
using static PgIpc.Sinval.SinvalConstants;

namespace PgIpc.Sinval;

unsafe partial class SinvalQueue
{
    // ------------------------------------------------------------------
    // Sending
    // ------------------------------------------------------------------

    /// <summary>
    /// Broadcasts <paramref name="messages"/> to every other reader, in order. Convenience: as the calling thread's
    /// <see cref="Participant.Current"/>; <see cref="SendMessages(Participant, ReadOnlySpan{SharedInvalidationMessage})"/> is the primary API.
    /// </summary>
    public void SendMessages(ReadOnlySpan<SharedInvalidationMessage> messages) => SendMessages(Participant.Current, messages);

    /// <summary>
    /// Broadcasts <paramref name="messages"/> to every reader (SIInsertDataEntries): in chunks of
    /// <see cref="SinvalConstants.WriteQuantum"/> under SInvalWriteLock, cleaning the queue when it is past its
    /// threshold. Never waits for readers; a reader left too far behind is reset.
    /// </summary>
    public void SendMessages(Participant me, ReadOnlySpan<SharedInvalidationMessage> messages)
    {
        CheckParticipant(me);
        SISegHeader* seg = _seg;
        while (!messages.IsEmpty)
        {
            int n = Math.Min(messages.Length, WriteQuantum);
            ReadOnlySpan<SharedInvalidationMessage> chunk = messages[..n];
            messages = messages[n..];

            _writeLock->Acquire(me, LWLockMode.Exclusive);
            try
            {
                // Make room, and keep the ring from growing past nextThreshold without a look at the readers.
                for (;;)
                {
                    int numMsgs = seg->MaxMsgNum - seg->MinMsgNum;
                    if (numMsgs + n > MaxNumMessages || numMsgs >= seg->NextThreshold)
                        CleanupQueue(me, callerHasWriteLock: true, minFree: n);
                    else
                        break;
                }

                int max = seg->MaxMsgNum;
                int first = max & (MaxNumMessages - 1);
                int firstPart = Math.Min(n, MaxNumMessages - first);
                chunk[..firstPart].CopyTo(new Span<SharedInvalidationMessage>(_ring + first, firstPart));
                if (firstPart < n)
                    chunk[firstPart..].CopyTo(new Span<SharedInvalidationMessage>(_ring, n - firstPart));

                // Publish: the payload above is written before MaxMsgNum moves. The spinlock's release pairs with
                // the reader's acquire of it in GetMessagesCore.
                SLock.Acquire(ref seg->MsgnumLock.Value, "msgnumLock");
                seg->MaxMsgNum = max + n;
                SLock.Release(ref seg->MsgnumLock.Value);

                // Then tell every reader. Release stores after the MaxMsgNum store: a reader that sees the flag and
                // clears it will load the new MaxMsgNum (pairs with the reader's clear + full barrier + load).
                int last = seg->LastBackend;
                ProcState* states = _states;
                for (int i = 0; i < last; i++)
                {
                    ProcState* s = states + i;
                    if (s->Pid != 0 && s->SendOnly == 0)
                        Volatile.Write(ref s->HasMessages, 1);
                }
            }
            finally
            {
                _writeLock->Release(me);
            }
        }
    }

    // ------------------------------------------------------------------
    // Receiving
    // ------------------------------------------------------------------

    /// <summary>
    /// Copies the next messages for <paramref name="me"/> into <paramref name="buffer"/> (SIGetDataEntries).
    /// Returns how many (0: nothing new), or -1 when <paramref name="me"/> fell off the ring and was reset: it has
    /// missed messages and must rebuild whatever it caches; it now stands at the newest message.
    /// Does not pass a catch-up signal on; <see cref="ReceiveAll"/> does (at its next call if GetMessages caught up).
    /// </summary>
    public int GetMessages(Participant me, Span<SharedInvalidationMessage> buffer)
    {
        CheckParticipant(me);
        if (buffer.IsEmpty)
            throw new ArgumentException("the receive buffer must hold at least one message", nameof(buffer));
        return GetMessagesCore(me, buffer);
    }

    private int GetMessagesCore(Participant me, Span<SharedInvalidationMessage> buffer)
    {
        int procno = me.ProcNumber;
        ProcState* s = _states + procno;
        if (s->Pid == 0 || s->Generation != me.Proc->Generation)
            ThrowNotRegistered(procno);

        // Fast path without locks (acquire; pairs with the inserter's release store of 1). A message being sent
        // right now may be missed; the caller could not have depended on it anyway.
        if (Volatile.Read(ref s->HasMessages) == 0)
            return 0;

        SISegHeader* seg = _seg;
        _readLock->Acquire(me, LWLockMode.Shared);
        // Clear the flag before looking at MaxMsgNum: the spinlock acquire below is a full barrier, so this store is
        // visible before the load. An inserter that moves MaxMsgNum after our load sets the flag again after our
        // clear, and we come back next time.
        Volatile.Write(ref s->HasMessages, 0);
        SLock.Acquire(ref seg->MsgnumLock.Value, "msgnumLock");
        int max = seg->MaxMsgNum;
        SLock.Release(ref seg->MsgnumLock.Value);

        if (s->ResetState != 0)
        {
            // Fell off the ring: resume at the newest message; a pending catch-up is moot.
            s->NextMsgNum = max;
            s->ResetState = 0;
            NoteCatchup(procno, s);
            _readLock->Release(me);
            return -1;
        }

        int next = s->NextMsgNum;
        int n = Math.Min(buffer.Length, max - next);
        int first = next & (MaxNumMessages - 1);
        int firstPart = Math.Min(n, MaxNumMessages - first);
        new ReadOnlySpan<SharedInvalidationMessage>(_ring + first, firstPart).CopyTo(buffer);
        if (firstPart < n)
            new ReadOnlySpan<SharedInvalidationMessage>(_ring, n - firstPart).CopyTo(buffer[firstPart..]);
        next += n;
        s->NextMsgNum = next;

        if (next >= max)
            NoteCatchup(procno, s);                 // caught up: the catch-up request (if any) is answered
        else
            Volatile.Write(ref s->HasMessages, 1);  // more to read: come back without waiting for a sender
        _readLock->Release(me);
        return n;
    }

    /// <summary>Clears the signaled flag (under ReadLock shared, by the owner) and remembers it was set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteCatchup(int procno, ProcState* s)
    {
        if (s->Signaled == 0)
            return;
        // Release; pairs with the acquire load in CatchupPending (the cleanup, its other writer, is excluded by
        // the ReadLock we hold shared).
        Volatile.Write(ref s->Signaled, 0);
        LocalReceiver? r = _local[procno];
        if (r is not null)
            r.CatchupSeen = true;
    }

    /// <summary>
    /// Consumes every message waiting for <paramref name="me"/> (ReceiveSharedInvalidMessages): calls
    /// <paramref name="onMessage"/> for each, in order; if <paramref name="me"/> was reset calls
    /// <paramref name="onReset"/> ("you missed messages: rebuild everything") and goes on with the messages sent
    /// since. Once caught up, if it had been asked to catch up, runs the cleanup so the request passes to the next
    /// slowest reader. <paramref name="onMessage"/> may call ReceiveAll again; if it throws, the messages already
    /// fetched but not yet delivered are delivered by the next call.
    /// </summary>
    public void ReceiveAll(Participant me, SinvalConsumer onMessage, Action onReset)
    {
        CheckParticipant(me);
        ArgumentNullException.ThrowIfNull(onMessage);
        ArgumentNullException.ThrowIfNull(onReset);
        LocalReceiver r = _local[me.ProcNumber] ?? ThrowNotRegistered(me.ProcNumber);

        // Messages fetched by an outer call (recursion) or by a call that threw, not yet delivered.
        while (r.Next < r.Count)
        {
            SharedInvalidationMessage m = r.Buffer[r.Next++];
            onMessage(in m);
        }

        for (;;)
        {
            r.Next = r.Count = 0;
            int got = GetMessagesCore(me, r.Buffer);
            if (got < 0)
            {
                onReset();
                continue; // the messages sent since the reset point
            }
            r.Count = got;
            while (r.Next < r.Count)
            {
                // A copy: a recursive call refills the buffer.
                SharedInvalidationMessage m = r.Buffer[r.Next++];
                onMessage(in m);
            }
            // Count may have been changed by a recursive call; a full batch means there may be more.
            if (r.Count < r.Buffer.Length)
                break;
        }

        if (r.CatchupSeen)
        {
            r.CatchupSeen = false;
            CleanupQueue(me, callerHasWriteLock: false, minFree: 0);
        }
    }

    /// <summary>True when the cleanup has asked <paramref name="me"/> to catch up and it has not yet (its signaled flag).</summary>
    public bool CatchupPending(Participant me)
    {
        CheckParticipant(me);
        // Acquire; pairs with the cleanup's release store of Signaled.
        return Volatile.Read(ref _states[me.ProcNumber].Signaled) != 0;
    }
}
