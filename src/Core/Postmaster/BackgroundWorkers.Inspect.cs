/*-------------------------------------------------------------------------
 * BackgroundWorkers.Inspect.cs
 *   The registered children as an inspection tool sees them: each slot in
 *   use with its name, kind, state and pid (`pgipc inspect --procs` names a
 *   participant's role from it), read without joining.
 *
 * NOTES
 *   The slots are copied raw under the array's spinlock, as the supervisor's
 *   own scan does (RegisteredSlots), and decoded after it is released; a
 *   slot whose name length is wild is shown as such, never followed.
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>One registered child of a cluster, as <see cref="BackgroundWorkerArray.TryReadWorkers"/> read it.</summary>
/// <param name="Slot">The slot's index.</param>
/// <param name="Name">The name it was registered with (<see cref="ChildSpec"/>'s name).</param>
/// <param name="Kind">The participant kind it joins as.</param>
/// <param name="State">Where it is in its life.</param>
/// <param name="Pid">Its process id while <see cref="BackgroundWorkerState.Started"/>, else 0.</param>
public readonly record struct BackgroundWorkerInfo(int Slot, string Name, ProcKind Kind, BackgroundWorkerState State, int Pid);

public sealed unsafe partial class BackgroundWorkerArray
{
    /// <summary>
    /// The slots in use of the background worker array in <paramref name="segment"/> (for inspection tools), without
    /// joining. False when the segment has no such array (it was not made by a <see cref="ClusterBuilder"/>).
    /// </summary>
    public static bool TryReadWorkers(ShmemSegment segment, out IReadOnlyList<BackgroundWorkerInfo> workers)
    {
        ArgumentNullException.ThrowIfNull(segment);
        workers = [];
        if (!segment.TryFindStruct(ShmemName, out _))
            return false;
        BackgroundWorkerArray array = Attach(segment);
        byte[] raw = new byte[array._numSlots * sizeof(BackgroundWorkerSlot)];
        fixed (byte* dst = raw)
        {
            SLock.Acquire(ref array._header->Lock.Value, ShmemName);
            Buffer.MemoryCopy(array._slots, dst, raw.Length, raw.Length);
            SLock.Release(ref array._header->Lock.Value);
        }
        List<BackgroundWorkerInfo> list = [];
        fixed (byte* src = raw)
        {
            var slots = (BackgroundWorkerSlot*)src;
            for (int i = 0; i < array._numSlots; i++)
            {
                BackgroundWorkerSlot* s = slots + i;
                if (s->InUse == 0)
                    continue;
                int len = s->NameLength;
                string name = len is > 0 and < BackgroundWorkerSlot.NameCapacity
                    ? Encoding.UTF8.GetString(s->Name, len)
                    : $"(corrupt name length {len})";
                list.Add(new BackgroundWorkerInfo(i, name, (ProcKind)s->Kind, (BackgroundWorkerState)s->State,
                    s->State == (int)BackgroundWorkerState.Started ? s->Pid : 0));
            }
        }
        workers = list;
        return true;
    }
}
