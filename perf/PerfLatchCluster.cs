/*-------------------------------------------------------------------------
 * PerfLatchCluster.cs
 *   A segment holding a participant slot array (ProcArray), the ProcSignal
 *   state and a cache line of control words: what the latch benchmarks and
 *   the two-process latch ping-pong harness run on.
 *
 * NOTES
 *   The creator calls Create (ProcArray.Init + ProcSignal.Init, as a
 *   postmaster would at start-up; ProcArray.Init also makes the backend's
 *   latch wake objects: nothing on Linux beyond the slot storage, the
 *   FIFO directory /tmp/pgipc.<name> on Posix); a second process calls
 *   Attach with the segment's handle. Close destroys the segment (creator)
 *   or detaches, which removes those wake objects too.
 *
 *   The control block is two cache lines (128 bytes), laid out by its
 *   user (PingPongControl in Contention/PingPongHarness.cs).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;

namespace PgIpc.Perf;

internal sealed unsafe class PerfLatchCluster
{
    public const string ControlName = "perf.latch.control";
    public const int ControlBytes = 128;

    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }

    /// <summary>Start of the control block (cache-line aligned by the allocator).</summary>
    public byte* Control { get; }

    private PerfLatchCluster(ShmemSegment segment, ProcArray procs)
    {
        Segment = segment;
        Procs = procs;
        if (!segment.TryFindStruct(ControlName, out ShmemRegion r))
            throw new InvalidOperationException($"segment {segment.Handle} has no {ControlName}");
        Control = (byte*)r.Pointer;
    }

    /// <summary>Creates the segment on <paramref name="backend"/> and everything in it.</summary>
    public static PerfLatchCluster Create(string tag, string backend)
    {
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(s_options.TotalProcs))
            .RequestAddinShmemSpace(ControlName, ControlBytes);
        ShmemSegment? segment = PerfSegments.Create(tag, backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            ProcSignal.Init(segment, procs, out _);
            segment.InitStruct(ControlName, ControlBytes, out _);
            return new PerfLatchCluster(segment, procs);
        }
        catch
        {
            PerfSegments.Destroy(ref segment);
            throw;
        }
    }

    /// <summary>The second process's view of a cluster another process created.</summary>
    public static PerfLatchCluster Attach(string handle)
    {
        ShmemSegment segment = ShmemSegment.Attach(handle);
        try
        {
            return new PerfLatchCluster(segment, ProcArray.Attach(segment));
        }
        catch
        {
            segment.Dispose();
            throw;
        }
    }

    /// <summary>Destroys (creator) or detaches from the segment; also gives back every participant slot of this process.</summary>
    public void Close()
    {
        if (!Segment.IsAttached)
            return;
        if (Segment.IsCreator)
            Segment.Destroy();
        else
            Segment.Dispose();
    }
}
