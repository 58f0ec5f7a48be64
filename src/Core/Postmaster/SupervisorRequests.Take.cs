/*-------------------------------------------------------------------------
 * SupervisorRequests.Take.cs
 *   The supervisor's side of the request area: taking the pending
 *   requests, and writing a worker request's outcome (started, failed to
 *   start, exited).
 *
 * NOTES
 *   As BackgroundWorkerArray.RegisteredSlots: the slots are copied raw under
 *   the spinlock into a buffer allocated before it, and decoded after it is
 *   released, so nothing under the lock can throw. A restart or service
 *   request is freed in the same critical section that copies it (taken
 *   once); a worker request stays Pending until the supervisor writes its
 *   outcome, and the supervisor's own records say which it has accepted.
 *   Every outcome is written only while the slot still holds the request's
 *   generation and is in the state the transition starts from, so a worker
 *   that reported Finished before the supervisor saw it start keeps its
 *   result.
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

public sealed unsafe partial class SupervisorRequests
{
    /// <summary>
    /// The supervisor: the pending requests, oldest first. Restart and service requests are freed as they are taken;
    /// worker requests stay Pending. A slot whose lengths are wild is freed and listed in <paramref name="corrupt"/>.
    /// </summary>
    internal List<TakenRequest> TakePending(List<(int Slot, string Error)> corrupt)
    {
        byte[] raw = new byte[_numSlots * sizeof(SupervisorRequestSlot)];
        fixed (byte* dst = raw)
        {
            SLock.Acquire(ref _header->Lock.Value, ShmemName);
            Buffer.MemoryCopy(_slots, dst, raw.Length, raw.Length);
            for (int i = 0; i < _numSlots; i++)
            {
                SupervisorRequestSlot* s = _slots + i;
                if (s->State == (int)WorkerRequestState.Pending && s->Kind != (int)SupervisorRequestKind.StartWorker)
                    s->State = 0;
            }
            SLock.Release(ref _header->Lock.Value);
        }
        List<TakenRequest> list = [];
        fixed (byte* src = raw)
        {
            var slots = (SupervisorRequestSlot*)src;
            for (int i = 0; i < _numSlots; i++)
            {
                SupervisorRequestSlot* s = slots + i;
                if (s->State != (int)WorkerRequestState.Pending)
                    continue;
                if (s->Kind is < (int)SupervisorRequestKind.StartWorker or > (int)SupervisorRequestKind.Service)
                {
                    corrupt.Add((i, $"{ShmemName} slot {i} is corrupt: Kind {s->Kind}"));
                    Free(i, s->Generation);
                    continue;
                }
                try
                {
                    list.Add(Decode(i, s));
                }
                catch (PgIpcException ex)
                {
                    corrupt.Add((i, ex.Message));
                    if (s->Kind == (int)SupervisorRequestKind.StartWorker)
                        Fail(i, s->Generation, ex.Message);
                }
            }
        }
        list.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));
        return list;
    }

    /// <summary>The supervisor: the worker of a request runs as <paramref name="pid"/> (unless it already reported).</summary>
    internal void MarkStarted(int slot, int generation, int pid)
        => Transition(slot, generation, WorkerRequestState.Pending, WorkerRequestState.Started, pid, 0, []);

    /// <summary>The supervisor: the worker of a request could not be started, for <paramref name="why"/>.</summary>
    internal void Fail(int slot, int generation, string why)
    {
        byte[] text = Encoding.UTF8.GetBytes(why);
        if (text.Length > SupervisorRequestSlot.ResultCapacity)
            text = text[..SupervisorRequestSlot.ResultCapacity];
        Transition(slot, generation, WorkerRequestState.Pending, WorkerRequestState.Failed, 0, 0, text);
    }

    /// <summary>The supervisor: the worker of a request exited with <paramref name="exitCode"/> without reporting a result.</summary>
    internal void MarkExited(int slot, int generation, int pid, int exitCode)
    {
        Transition(slot, generation, WorkerRequestState.Started, WorkerRequestState.Exited, pid, exitCode, []);
        Transition(slot, generation, WorkerRequestState.Pending, WorkerRequestState.Exited, pid, exitCode, []);
    }

    private void Transition(int slot, int generation, WorkerRequestState from, WorkerRequestState to, int pid, int exitCode, byte[] result)
    {
        if (!_segment.IsAttached || (uint)slot >= (uint)_numSlots)
            return;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        SupervisorRequestSlot* s = _slots + slot;
        if (s->Generation == generation && s->State == (int)from)
        {
            s->WorkerPid = pid;
            s->ExitCode = exitCode;
            if (result.Length > 0)
            {
                result.CopyTo(new Span<byte>(s->Result, SupervisorRequestSlot.ResultCapacity));
                s->ResultLength = result.Length;
            }
            s->State = (int)to;
        }
        SLock.Release(ref _header->Lock.Value);
    }
}
