/*-------------------------------------------------------------------------
 * PreExistingSegment.cs
 *   What an OS object found at one of a cluster's candidate ids is: gone,
 *   not ours, in use, or a crashed run's leftover; and `pgipc cleanup`'s
 *   sweep over every candidate on the machine.
 *
 * NOTES
 *   ShmemSegment.Create tries an exclusive create at each candidate id;
 *   where something already exists it asks Examine, as
 *   PGSharedMemoryCreate asks PGSharedMemoryAttach / PGSharedMemoryIsInUse:
 *     - not a PgIpc segment, or another cluster's: Foreign (next id);
 *     - ours, and its creator is alive or anyone is attached: InUse, with
 *       a pid to name ("pre-existing shared memory block is still in use
 *       by pid N": the creator if alive, else an attached process);
 *     - ours, creator dead and nobody attached: Stale; the caller removes
 *       it and creates afresh.
 *   "Anyone attached" is the OS's count where it keeps one (SysV nattch),
 *   the live pids in the header's attach table, and, given an
 *   IStaleSegmentHandler, the pids the layers above recorded in the segment
 *   (the only witnesses where the OS keeps no count: POSIX, Windows). Here
 *   only ProcessLiveness.Alive counts: a zombie has unmapped everything,
 *   and where PID 1 does not reap (containers) an orphaned child that
 *   exited stays one and must not keep the cluster from starting.
 *
 *   Before a stale segment is removed, the handler removes the other OS
 *   objects its cluster made, while the segment is still mapped here (a
 *   read-only view); Leftovers counts them for ShmemSegment's
 *   LeftoversRemoved. A header still zero after 200 ms is a creator that
 *   died between create and header write: stale unless the OS counts
 *   attachers.
 *
 *   Every field past the magic is another process's word. The layout
 *   version is checked first: a segment of a version this build does not
 *   know is reported (UnknownLayout) and neither judged nor walked nor
 *   removed. A segment of our version has its header's sizes and index
 *   validated before any structure in it is looked up (the stale view is a
 *   ShmemSegment, whose constructor checks them); a corrupt header or
 *   record leaves the segment judged on its creator and attach table only
 *   (both at fixed places in the header) and its other OS objects alone,
 *   with the damage in the report's Reason.
 *
 *   Another user's object this process may not read (the backend throws
 *   SharedMemoryNotAccessibleException for EACCES) is not this cluster's,
 *   as PGSharedMemoryAttach judges EACCES: ShmemSegment.Create goes on to
 *   the next id and names it (and its owner uid) only when no id is left;
 *   CleanupStale reports it (StaleVerdict.Unreadable, with the reason), as
 *   any other object it cannot examine, and goes on with the rest.
 *
 *   Mirrors PGSharedMemoryCreate / PGSharedMemoryAttach /
 *   PGSharedMemoryIsInUse in src/backend/port/sysv_shmem.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Shmem;

/// <summary>Examines an existing OS object at a candidate id (see file notes).</summary>
internal static unsafe class PreExistingSegment
{
    internal enum Verdict { Vanished, Foreign, Stale, InUse, UnknownLayout }

    /// <summary>What the handler removed, over all the stale segments one Create or cleanup met.</summary>
    internal sealed class Leftovers
    {
        public int All;
        public int Dsm;
        public int StaleSegments;
    }

    /// <summary>
    /// Looks at the OS object at <paramref name="id"/>. With <paramref name="removeLeftovers"/> and a
    /// <paramref name="handler"/>, a stale PgIpc segment's other OS objects are removed while it is still mapped here;
    /// the caller then removes the segment itself.
    /// </summary>
    public static Verdict Examine(IPgIpcPlatform platform, string id, ulong? keyHash, IStaleSegmentHandler? handler,
        Leftovers? removeLeftovers, out int pid, out long attached, out string? damage)
    {
        pid = 0;
        attached = 0;
        damage = null;
        ISharedMemoryProvider shm = platform.SharedMemory;
        IProcessServices processes = platform.Processes;
        SegmentOsStatus status = shm.QueryStatus(id);
        if (!status.Exists)
            return Verdict.Vanished;

        IMappedSegment mapping;
        try { mapping = shm.Attach(id); }
        catch (SharedMemoryNotFoundException) { return Verdict.Vanished; }
        using (mapping)
        {
            PgShmemHeader* h = (PgShmemHeader*)mapping.BaseAddress;
            if (mapping.Size < sizeof(PgShmemHeader))
                return Verdict.Foreign;
            uint magic = Volatile.Read(ref h->Magic);
            if (magic == 0)
            {
                // Either a creator is between create and header write, or one crashed there.
                Thread.Sleep(200);
                magic = Volatile.Read(ref h->Magic);
                if (magic == 0)
                {
                    long osOthers = status.AttachCount;
                    if (osOthers > 0)
                    {
                        pid = status.CreatorPid;
                        attached = osOthers;
                        return Verdict.InUse;
                    }
                    return Verdict.Stale;
                }
            }
            if (magic != PgShmemHeader.MagicValue)
                return Verdict.Foreign;
            // The version before any other field: every other offset is this layout's. An unknown layout is not
            // judged (its creator pid and attach table may be elsewhere) and never walked.
            uint version = Volatile.Read(ref h->LayoutVersion);
            if (version != PgShmemHeader.CurrentLayoutVersion)
            {
                damage = $"layout version {version}; this build understands {PgShmemHeader.CurrentLayoutVersion}";
                return Verdict.UnknownLayout;
            }
            if (keyHash is ulong kh && h->KeyHash != kh)
                return Verdict.Foreign;

            int creator = h->CreatorPid;
            // Alive only: a zombie creator has unmapped the segment (file notes).
            bool creatorAlive = processes.GetLiveness(creator) == ProcessLiveness.Alive;
            int firstLive = 0;
            long livePids = ShmemAttachTable.CountAlive(processes, h, ref firstLive);
            long osCount = status.AttachCount; // read before our probe attached
            attached = Math.Max(osCount, livePids);
            // The participants the layers above recorded: a second witness where the OS keeps no count (POSIX shm,
            // Windows) and the attach table may have been overrun or cleared. The view checks the header's sizes and
            // index first (ShmemSegment's constructor); a corrupt one is not walked at all: the segment is judged on
            // its creator and attach table alone, and its other OS objects are left (`pgipc cleanup` says why).
            ShmemSegment? view = null;
            if (handler is not null && Volatile.Read(ref h->State) == (int)ShmemState.Ready)
            {
                try { view = ShmemSegment.StaleView(platform, mapping); }
                catch (ShmemCorruptException ex) { damage = ex.Message; }
            }
            try
            {
                int recordedLive = 0;
                if (!creatorAlive && attached == 0 && view is not null)
                {
                    try
                    {
                        foreach (int p in handler!.RecordedPids(view))
                        {
                            if (p != creator && processes.GetLiveness(p) == ProcessLiveness.Alive) // as the creator
                            {
                                recordedLive = p;
                                attached = 1;
                                break;
                            }
                        }
                    }
                    catch (ShmemCorruptException ex)
                    {
                        // What the layers above recorded cannot be read: no witnesses, and nothing of it is removed.
                        damage = ex.Message;
                        view.ReleaseView();
                        view = null;
                    }
                }
                if (creatorAlive || attached > 0)
                {
                    pid = creatorAlive ? creator : firstLive != 0 ? firstLive : recordedLive != 0 ? recordedLive : status.CreatorPid;
                    return Verdict.InUse;
                }
                if (removeLeftovers is not null && view is not null)
                {
                    try
                    {
                        removeLeftovers.All += handler!.RemoveLeftovers(view, out int dsm);
                        removeLeftovers.Dsm += dsm;
                    }
                    catch (ShmemCorruptException ex)
                    {
                        damage = ex.Message; // what it records cannot be trusted: its objects are left alone
                    }
                }
                return Verdict.Stale;
            }
            finally
            {
                view?.ReleaseView();
            }
        }
    }

    /// <summary>ShmemSegment.CleanupStale: every candidate of <paramref name="platform"/> examined, the stale ones removed unless <paramref name="dryRun"/>.</summary>
    public static IReadOnlyList<StaleSegmentReport> CleanupStale(IPgIpcPlatform platform, bool dryRun, IStaleSegmentHandler? handler)
    {
        List<StaleSegmentReport> report = [];
        foreach (string id in platform.SharedMemory.EnumerateCandidates())
        {
            // One object that cannot be examined (another user's, an OS error) is reported and the sweep goes on.
            try
            {
                Verdict verdict = Examine(platform, id, null, handler, dryRun ? null : new Leftovers(), out int pid, out long attached, out string? damage);
                switch (verdict)
                {
                    case Verdict.Stale:
                        bool removed = !dryRun && platform.SharedMemory.Remove(id);
                        report.Add(new StaleSegmentReport(platform.Name, id, StaleVerdict.Stale, 0, 0, removed, damage));
                        break;
                    case Verdict.UnknownLayout:
                        report.Add(new StaleSegmentReport(platform.Name, id, StaleVerdict.UnknownLayout, 0, 0, false, damage));
                        break;
                    case Verdict.InUse:
                        report.Add(new StaleSegmentReport(platform.Name, id, StaleVerdict.InUse, pid, attached, false));
                        break;
                    case Verdict.Foreign:
                        report.Add(new StaleSegmentReport(platform.Name, id, StaleVerdict.NotPgIpc, 0, 0, false));
                        break;
                }
            }
            catch (Exception ex) when (ex is PgIpcException or IOException or UnauthorizedAccessException)
            {
                report.Add(new StaleSegmentReport(platform.Name, id, StaleVerdict.Unreadable, 0, 0, false, ex.Message));
            }
        }
        return report;
    }
}
