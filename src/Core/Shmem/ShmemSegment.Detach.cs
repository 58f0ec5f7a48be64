/*-------------------------------------------------------------------------
 * ShmemSegment.Detach.cs
 *   Detaching from and destroying the main segment: the on-detach
 *   callbacks, the holds that keep the mapping for threads still inside it
 *   (HoldMapping), and the unmap.
 *
 *   See ShmemSegment.cs for the segment as a whole.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;

namespace PgIpc.Shmem;

public sealed unsafe partial class ShmemSegment
{
    // ------------------------------------------------------------------
    // Detach / destroy
    // ------------------------------------------------------------------

    /// <summary>
    /// Destroys the segment: later attaches fail, the OS object is removed (existing mappings elsewhere stay
    /// valid until those processes detach). Throws if this object already destroyed or detached it.
    /// </summary>
    public void Destroy()
    {
        int prev = Interlocked.CompareExchange(ref _state, 2, 0);
        if (prev == 2)
            throw new ObjectDisposedException(nameof(ShmemSegment), $"shared memory segment {Handle.Id} was already destroyed");
        if (prev == 1)
            throw new ObjectDisposedException(nameof(ShmemSegment), $"shared memory segment {Handle.Id} was detached from this process; attach again to destroy it");
        // Release; pairs with the acquire load in WaitUntilReady (late attachers see Destroyed).
        Volatile.Write(ref Header->State, (int)ShmemState.Destroyed);
        RunOnDetach(destroying: true);
        UnregisterAttach();
        string id = Handle.Id;
        UnmapUnlessHeld();
        _platform.SharedMemory.Remove(id);
        ThrowDetachErrors();
    }

    /// <summary>Detaches from the segment (it lives on for others). Idempotent; a no-op after Destroy.</summary>
    public void Dispose()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
            return;
        RunOnDetach(destroying: false);
        UnregisterAttach();
        UnmapUnlessHeld();
        ThrowDetachErrors();
    }

    // Holds on the mapping past a detach (HoldMapping), and whether the detach has happened meanwhile. Under
    // _mappingLock; process-local.
    private readonly Lock _mappingLock = new();
    private int _mappingHolds;
    private bool _unmapPending;

    /// <summary>
    /// Keeps this process's mapping after the detach or destroy under way, until the returned token is disposed: for
    /// an on-detach callback whose threads are still inside the segment (ProcArray's participants that did not leave
    /// in time), so that they never touch unmapped memory. The OS object is still removed by a destroy; the memory
    /// goes when the last hold is released (or when the process exits).
    /// </summary>
    internal IDisposable HoldMapping()
    {
        lock (_mappingLock)
            _mappingHolds++;
        return new MappingHold(this);
    }

    private void UnmapUnlessHeld()
    {
        lock (_mappingLock)
        {
            if (_mappingHolds > 0)
            {
                _unmapPending = true;
                return;
            }
        }
        LiveMappings.Remove(_base);
        _mapping!.Dispose();
        _mapping = null;
    }

    private void ReleaseMappingHold()
    {
        lock (_mappingLock)
        {
            if (--_mappingHolds > 0 || !_unmapPending)
                return;
            _unmapPending = false;
        }
        LiveMappings.Remove(_base);
        _mapping!.Dispose();
        _mapping = null;
    }

    /// <summary>Whether a detached segment's memory is still mapped here because of a <see cref="HoldMapping"/>.</summary>
    internal bool IsMappingHeldAfterDetach
    {
        get
        {
            lock (_mappingLock)
                return _unmapPending;
        }
    }

    private sealed class MappingHold(ShmemSegment segment) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
                segment.ReleaseMappingHold();
        }
    }

    private void ThrowDetachErrors()
    {
        // Raised after the mapping is gone, so a failing callback never leaves the segment half-detached.
        if (_detachErrors is not null)
            throw _detachErrors;
    }

    /// <summary>True until this process detaches from the segment.</summary>
    public bool IsAttached => Volatile.Read(ref _state) == 0;

    /// <summary>
    /// Registers a callback run when this process detaches from (or destroys) the segment, before the mapping
    /// goes away, in reverse order of registration (PostgreSQL's on_shmem_exit). The argument is true when the
    /// segment is being destroyed: the callback then also removes the OS objects it made (semaphores, events).
    /// </summary>
    public void RegisterOnDetach(Action<bool> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        ThrowIfNotAttached();
        _onDetach.Add(callback);
    }

    private void RunOnDetach(bool destroying) => _detachErrors = _onDetach.RunAll(destroying, Handle.Id);

    /// <summary>Failures of on-detach callbacks in the last detach or destroy (null when none).</summary>
    public AggregateException? DetachErrors => _detachErrors;

    /// <summary>The allocator's free offset (read outside its lock, for a report), checked against the segment.</summary>
    private long CheckedFreeOffset(long free)
    {
        if (free < _indexEnd || free > TotalSize)
            ThrowCorruptFreeOffset();
        return free;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void ThrowCorruptFreeOffset()
        => throw new ShmemCorruptException($"segment header of {Handle.Id}", "FreeOffset",
            $"0x{Volatile.Read(ref Header->FreeOffset):x} is outside the allocatable bytes [0x{_indexEnd:x}, 0x{TotalSize:x}]");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfNotAttached()
    {
        if (_state != 0)
            ThrowNotAttached();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotAttached()
        => throw new ObjectDisposedException(nameof(ShmemSegment), $"shared memory segment {Handle.Id} is no longer attached in this process ({(_state == 2 ? "destroyed" : "detached")})");

    /// <summary>
    /// Looks at every segment of <paramref name="platform"/> that may be PgIpc's and removes those left by a
    /// crashed run (creator dead, nobody attached). With <paramref name="dryRun"/> only reports. The stale
    /// segments' other OS objects are left alone: the cluster layer's ClusterLeftovers.CleanupStale removes them too.
    /// </summary>
    public static IReadOnlyList<StaleSegmentReport> CleanupStale(IPgIpcPlatform? platform = null, bool dryRun = false)
        => CleanupCore(platform ?? PgIpcPlatform.Current, dryRun, null);

    /// <summary>As <see cref="CleanupStale(IPgIpcPlatform?, bool)"/>; <paramref name="staleHandler"/> also removes each stale segment's other OS objects.</summary>
    internal static IReadOnlyList<StaleSegmentReport> CleanupStale(IPgIpcPlatform? platform, bool dryRun, IStaleSegmentHandler? staleHandler)
        => CleanupCore(platform ?? PgIpcPlatform.Current, dryRun, staleHandler);

    /// <summary>
    /// The backend's creation lock first (as in Create): an object a live creator is still making is in use whatever
    /// its header says, one whose creator died before writing anything is stale (its header cannot say so: it has
    /// none). Those rows replace what the header examination reports for the same ids.
    /// </summary>
    private static IReadOnlyList<StaleSegmentReport> CleanupCore(IPgIpcPlatform platform, bool dryRun, IStaleSegmentHandler? staleHandler)
    {
        ISharedMemoryProvider shm = platform.SharedMemory;
        Dictionary<string, StaleSegmentReport> unfinished = [];
        foreach (string id in shm.EnumerateCandidates())
        {
            SegmentCreation creation = shm.ProbeCreation(id, HeaderSize, removeAbandoned: !dryRun);
            if (creation == SegmentCreation.InProgress)
                unfinished[id] = new StaleSegmentReport(platform.Name, id, StaleVerdict.InUse, 0, 0, false);
            else if (creation == SegmentCreation.Abandoned)
                unfinished[id] = new StaleSegmentReport(platform.Name, id, StaleVerdict.Stale, 0, 0, !dryRun);
        }
        List<StaleSegmentReport> report = [];
        foreach (StaleSegmentReport r in PreExistingSegment.CleanupStale(platform, dryRun, staleHandler))
            if (!unfinished.ContainsKey(r.Id))
                report.Add(r);
        report.AddRange(unfinished.Values);
        return report;
    }
}
